"""Per-message speed through the command users run, against the C client, on the same brokers.

Run: `.venv/bin/python -m benchmarks.bench_swarm_command` (about 10 minutes; `--help`).

Every scenario sends `--messages` CR1000X SOILMET payloads (one generated row each, ~15 KB) to
private Mosquittos with no subscriber, as
- `iot-swarm --mode loop --sleep-time 0 --max-publish-rate 0 --connect-rate 0` (its report's
  msgs/s: messages over first shard start to last shard end, connects and drain included), and
- `mosquitto_pub -l` reading the same payloads, one line each (wall time of the process, or of
  the slower of two processes sending half each, for the two-shard comparisons: both to one
  broker, or one to each of two brokers, as the shards are).
Reference and subject run back to back, alternating, `--pairs` times; the ratio printed is the
median of the pairs' ratios. The machine may be shared: only alternation makes them comparable.
For two shards it also prints their rate over one shard's and, as the check that the broker and
the cores are not the limit, the C client's in two processes over one.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_swarm_mqtt import soilmet_payloads
from iotswarm_pipelines.local_broker import LocalMosquitto

DEVICES = 50
RATE = re.compile(r"sent (\d+) \(([\d.]+) msgs/s\), acknowledged (\d+), failed (\d+)")
IOT_SWARM = str(Path(sys.executable).with_name("iot-swarm"))


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: str  # per-device or shared
    shards: int
    brokers: int = 1  # shards take brokers round robin; the C reference sends one file to each

    def argv(self, ports: list[int], qos: int, messages: int, workdir: Path) -> list[str]:
        brokers = ",".join(f"127.0.0.1:{port}" for port in ports[: self.brokers])
        return [
            IOT_SWARM,
            *("--source", f"sqlite:///{workdir / 'sample.db'}", "--table", "LEVEL1_SOILMET_30MIN"),
            *("--mode", "loop", "--devices", str(DEVICES), "--connections", self.connections),
            *("--shards", str(self.shards), "--max-cycles", str(messages // DEVICES)),
            *("--sleep-time", "0", "--max-publish-rate", "0", "--connect-rate", "0"),
            *("--qos", str(qos), "--brokers", brokers),
            *("--swarm-name", f"bench-{uuid.uuid4().hex[:8]}"),
            *("--sessions-dir", str(workdir / "sessions")),
        ]


SCENARIOS = {
    "shared": Scenario("iot-swarm, 50 devices on 1 shared connection", "shared", 1),
    "per-device": Scenario("iot-swarm, 50 per-device connections", "per-device", 1),
    "2-shards": Scenario("iot-swarm, 50 per-device connections, 2 shards", "per-device", 2),
    "2-shards-2-brokers": Scenario(
        "iot-swarm, 50 per-device connections, 2 shards on 2 brokers", "per-device", 2, 2
    ),
}
TARGETS = {0: 0.7, 1: 0.5}


def iot_swarm(scenario: Scenario, ports: list[int], qos: int, n: int, workdir: Path) -> float:
    return run_iot_swarm(scenario.argv(ports, qos, n, workdir), n)


def run_iot_swarm(argv: list[str], n: int) -> float:
    """The report's msgs/s of one ``iot-swarm`` run that must send ``n`` messages cleanly."""
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    match = RATE.search(run.stdout)
    if run.returncode != 0 or match is None:
        raise SystemExit(f"iot-swarm failed ({run.returncode}): {run.stderr[-2000:]}{run.stdout}")
    sent, rate, acked, failed = match.groups()
    if int(sent) != n or int(acked) != n or int(failed):
        raise SystemExit(f"iot-swarm did not send {n} messages cleanly: {match.group(0)}")
    return float(rate)


def mosquitto_pub(ports: list[int], files: list[Path], qos: int) -> float:
    """msgs/s of one `mosquitto_pub -l` process per file, all started together; file k goes to
    broker k (round robin), as shard k does."""
    began = time.perf_counter()
    procs = []
    for k, path in enumerate(files):
        port = ports[k % len(ports)]
        topic = f"iotswarm-bench-{uuid.uuid4().hex[:8]}/pub/data"
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", str(qos)]
        with path.open("rb") as stdin:
            procs.append(subprocess.Popen([*argv, "-l"], stdin=stdin))
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"mosquitto_pub failed with exit status {proc.returncode}")
    lines = sum(sum(1 for _ in path.open("rb")) for path in files)
    return lines / (time.perf_counter() - began)


def payload_files(payloads: list[bytes], n: int, parts: int, workdir: Path) -> list[Path]:
    files = []
    for part in range(parts):
        path = workdir / f"payloads-{parts}-{part}.txt"
        with path.open("wb") as out:
            for i in range(part, n, parts):
                out.write(payloads[i % len(payloads)] + b"\n")
        files.append(path)
    return files


def compare(label: str, reference, subject, pairs: int) -> tuple[float, float, float]:
    """Median reference rate, median subject rate and median per-pair ratio."""
    refs, subs = [], []
    for pair in range(pairs):
        # Alternate which side goes first, so neither always meets the other's leftovers.
        if pair % 2 == 0:
            refs.append(reference())
            subs.append(subject())
        else:
            subs.append(subject())
            refs.append(reference())
    ratios = [s / r for s, r in zip(subs, refs, strict=True)]
    result = statistics.median(refs), statistics.median(subs), statistics.median(ratios)
    pairs_text = ", ".join(f"{s:,.0f}/{r:,.0f}" for s, r in zip(subs, refs, strict=True))
    print(f"  {label}: pairs (subject/reference msgs/s) {pairs_text}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--qos", type=int, action="append", choices=(0, 1))
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    args = parser.parse_args()
    n = args.messages - args.messages % DEVICES
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        payloads = soilmet_payloads(workdir)
        files = {k: payload_files(payloads, n, k, workdir) for k in (1, 2)}
        brokers = [stack.enter_context(LocalMosquitto(workdir / f"broker-{b}")) for b in (0, 1)]
        ports = [broker.port for broker in brokers]
        print(f"Mosquittos on 127.0.0.1:{ports}; {n} x {len(payloads[0]) / 1024:.1f} KiB")
        rows = []
        for qos in args.qos or [0, 1]:
            measured: dict[str, tuple[float, float]] = {}
            for key in args.scenario or list(SCENARIOS):
                scenario = SCENARIOS[key]
                parts = files[scenario.shards]
                used = ports[: scenario.brokers]
                ref_name = f"mosquitto_pub -l x {len(parts)}" + (
                    f" on {len(used)} brokers" if len(used) > 1 else ""
                )
                ref, sub, ratio = compare(
                    f"QoS {qos} {scenario.name}",
                    lambda parts=parts, used=used, qos=qos: mosquitto_pub(used, parts, qos),
                    lambda scenario=scenario, qos=qos: iot_swarm(scenario, ports, qos, n, workdir),
                    args.pairs,
                )
                measured[key] = ref, sub
                rows.append((qos, scenario.name, sub, ref_name, ref, ratio))
                print(
                    f"QoS {qos} | {scenario.name} | {sub:,.0f} msgs/s | {ref_name} "
                    f"{ref:,.0f} msgs/s | ratio {ratio:.2f} (target >= {TARGETS[qos]})",
                    flush=True,
                )
            for key in ("2-shards", "2-shards-2-brokers"):
                if key in measured and "per-device" in measured:
                    (c_two, two), (c_one, one) = measured[key], measured["per-device"]
                    print(
                        f"QoS {qos}, {key}: iot-swarm 2 shards / 1 shard {two / one:.2f}; "
                        f"C in two processes / one {c_two / c_one:.2f}"
                    )
        print("\n| QoS | scenario | iot-swarm | C reference | ratio |\n|---|---|---|---|---|")
        for qos, name, sub, ref_name, ref, ratio in rows:
            print(f"| {qos} | {name} | {sub:,.0f} | {ref_name} {ref:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
