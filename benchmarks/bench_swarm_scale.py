"""Many per-device connections from one host, through the `iot-swarm` command users run.

Run: `.venv/bin/python -m benchmarks.bench_swarm_scale --devices 100000 --shards 6 --brokers 6
--minutes 3` (several minutes; `--devices 10000 --shards 2 --brokers 2 --minutes 2` proves the
set-up in less). Options the benchmark does not know go to iot-swarm as they are (for example
`--connect-rate 500`, or a scenario's `--outage-share 100 --outage-start 150 --outage-minutes
600` with `--sleep-time 5 --no-delay-start`); otherwise iot-swarm's defaults hold, as for a user
(connect rate 200/s per shard, keep-alive 60 s).

The benchmark starts `--brokers` private Mosquittos on loopback (their open-file limit lifted
to the hard one first, 20,000 per process here), then one
`iot-swarm --mode loop --sleep-time 60 --delay-start --max-cycles MINUTES --qos 1 --verify`
over a generated sample database: `--shards` step processes under Dagster, taking the brokers
(`--brokers`) and loopback source addresses 127.0.0.2, 127.0.0.3, ... (`--source-addresses`)
round robin, so one process and one broker each stay under the open-file limit and one source
address under its ~28,000 ephemeral ports. Each device sends one message a minute, the first
at a random moment of the first minute. Everything the command writes (Dagster instance,
session, report) stays in a temporary folder.

While it runs, the memory of the whole process tree of that iot-swarm (the command, its
detached run, the forkserver, the shard steps and their log watchers) is read every second from
/proc/PID/smaps_rollup: the peak of the summed PSS (shared pages split among the processes
sharing them, so the sum is the tree's true total) and, for comparison, the peak of the summed
RSS (shared pages counted once per process). Brokers are not swarm processes and not in the
tree. Printed: iot-swarm's report, then one line of connections, connect failures, sent,
acknowledged, failed, delivered, lost, duplicated, latency p50/p95/p99 (from the report the
command saves beside its session), wall times and memory. Exit status 1 when iot-swarm failed
or a message was lost, duplicated, failed or not delivered.

^C or SIGTERM stops iot-swarm as a user's ^C does (it stops the devices, drains and reports; a
second one abandons the run), then the brokers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from benchmarks.bench_swarm_mqtt import raise_open_files, soilmet_payloads
from iotswarm_pipelines.local_broker import LocalMosquitto

FILES_PER_BROKER = 19_900  # the hard open-file limit here is 20,000 per process
SAMPLE_SECONDS = 1.0
STOP_SECONDS = 60.0  # for iot-swarm to drain and report after a SIGINT, then it is killed
SMALL_MIB = 20
IOT_SWARM = str(Path(sys.executable).with_name("iot-swarm"))


@dataclass
class Memory:
    """Peaks of the summed PSS and RSS of a process tree, over samples (MiB)."""

    pss: float = 0.0
    rss: float = 0.0
    processes: int = 0  # at the peak of PSS
    each: list[float] = field(default_factory=list)  # each process's PSS at that peak

    def sample(self, root: int) -> None:
        readings = [m for m in map(_pss_rss_mib, _tree(root)) if m is not None]
        pss = sum(p for p, _ in readings)
        self.rss = max(self.rss, sum(r for _, r in readings))
        if pss > self.pss:
            self.pss, self.processes = pss, len(readings)
            self.each = sorted((p for p, _ in readings), reverse=True)

    def breakdown(self) -> str:
        """Each process's PSS at the peak; the small ones (tail, watchers) only counted."""
        large = [f"{m:.0f}" for m in self.each if m >= SMALL_MIB]
        small = [m for m in self.each if m < SMALL_MIB]
        return (
            f"MiB each {', '.join(large)} + {len(small)} under {SMALL_MIB} MiB ({sum(small):.0f})"
        )


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants, from each process's parent in /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _pss_rss_mib(pid: int) -> tuple[float, float] | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None  # ended meanwhile
    kib = {
        key: int(value.split()[0])
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if key in ("Pss", "Rss")
    }
    if "Pss" not in kib:
        return None  # a zombie: nothing mapped any more
    return kib["Pss"] / 1024, kib["Rss"] / 1024


def _ms(report: dict, percentile: int) -> str:
    value = report.get(f"latency_p{percentile}_ms")  # absent when nothing was delivered
    return "-" if value is None else f"{value:.1f}"


def _interrupt(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def run_swarm(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, Memory, float]:
    """Run iot-swarm, sampling its tree's memory: (exit status, stdout, memory, seconds).

    iot-swarm has its own session, so only this process signals it: once SIGINT (stop and
    report), then SIGTERM (abandon), however many interrupts this process gets.
    """
    memory = Memory()
    output = cwd / "iot-swarm.out"
    began = time.perf_counter()
    with output.open("wb") as stdout:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, start_new_session=True)
    interrupts = 0
    try:
        while proc.returncode is None:
            try:
                memory.sample(proc.pid)
                proc.wait(timeout=SAMPLE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM if interrupts else signal.SIGINT)
                interrupts += 1
    finally:  # this process failing must not leave the swarm running on its own
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - began
    code = proc.returncode if not interrupts else proc.returncode or 1
    return code, output.read_text(), memory, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--brokers", type=int, default=6)
    parser.add_argument("--minutes", type=int, default=3, help="messages per device")
    parser.add_argument(
        "--sleep-time", type=float, default=60.0, help="seconds between a device's sends"
    )
    parser.add_argument(
        "--delay-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spread first sends over the first sleep time (off: a network-wide outage drops "
        "every device at once)",
    )
    args, extra = parser.parse_known_args()
    per_shard = -(-args.devices // args.shards)
    shards_per_broker = -(-args.shards // args.brokers)
    if per_shard * shards_per_broker + shards_per_broker > FILES_PER_BROKER:
        raise SystemExit(
            f"{per_shard * shards_per_broker} connections per broker exceed its open-file limit: "
            "use more brokers or shards"
        )
    raise_open_files()  # inherited by the brokers; iot-swarm lifts its own
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        soilmet_payloads(workdir)  # writes workdir/sample.db
        brokers = [
            stack.enter_context(LocalMosquitto(workdir / f"broker-{b}"))
            for b in range(args.brokers)
        ]
        names = [f"127.0.0.1:{b.port}" for b in brokers]
        addresses = [f"127.0.0.{2 + s}" for s in range(args.shards)]
        name = f"scale-{uuid.uuid4().hex[:8]}"
        argv = [
            IOT_SWARM,
            *("--source", f"sqlite:///{workdir / 'sample.db'}", "--table", "LEVEL1_SOILMET_30MIN"),
            *("--mode", "loop", "--devices", str(args.devices), "--shards", str(args.shards)),
            *("--brokers", ",".join(names), "--source-addresses", ",".join(addresses)),
            *("--sleep-time", f"{args.sleep_time:g}", "--max-cycles", str(args.minutes)),
            *(["--delay-start"] if args.delay_start else []),
            *("--qos", "1", "--verify"),
            *("--swarm-name", name, "--sessions-dir", str(workdir / "sessions")),
            *extra,
        ]
        env = {
            **{k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
            "IOTSWARM_DATA_DIR": str(workdir / "data"),
        }
        print(
            f"{args.devices} devices in {args.shards} shards of up to {per_shard}, brokers "
            f"{names}, source addresses {addresses[0]}..{addresses[-1]}, {args.minutes} msgs "
            f"per device\n  {' '.join(argv[1:])}",
            flush=True,
        )
        code, output, memory, wall = run_swarm(argv, env, workdir)
        print(output, end="", flush=True)
        saved = workdir / "sessions" / f"{name}.report.json"
        if not saved.exists():
            raise SystemExit(f"iot-swarm exited with status {code} and saved no report")
        report = json.loads(saved.read_text())
    expected = args.devices * args.minutes
    print(
        f"scale: {report['connections']} per-device connections "
        f"({report['connect_failures']} connect failures), {report['sent']} sent over "
        f"{report['seconds']:.0f}s (command {wall:.0f}s), acked {report['acknowledged']}, "
        f"failed {report['failed']}, delivered {report['delivered']} of {expected}, lost "
        f"{report['lost']}, duplicated {report['duplicated']}; latency ms p50 "
        f"{_ms(report, 50)} p95 {_ms(report, 95)} p99 {_ms(report, 99)}; swarm processes' "
        "peak PSS summed "
        f"{memory.pss:,.0f} MiB over {memory.processes} processes ({memory.breakdown()}), peak "
        f"RSS summed {memory.rss:,.0f} MiB",
        flush=True,
    )
    clean = (report["sent"], report["acknowledged"], report["delivered"]) == (expected,) * 3
    if code or not clean or report["failed"] or report["lost"] or report["duplicated"]:
        raise SystemExit(f"not a clean run (iot-swarm exit status {code})")


if __name__ == "__main__":
    main()
