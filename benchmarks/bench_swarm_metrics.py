"""The swarm's msgs/s with live metrics on against off, through `iot-swarm` (target >= 0.95).

Run: `.venv/bin/python -m benchmarks.bench_swarm_metrics` (a few minutes; `--help`).

Both sides run the same `iot-swarm` command (bench_swarm_command's: 50 per-device connections,
CR1000X SOILMET payloads, `--sleep-time 0 --max-publish-rate 0 --connect-rate 0`, to a private
Mosquitto with no subscriber); "on" adds `--metrics-port` (each shard's `/metrics` endpoint)
and `--pushgateway` to a private Pushgateway (Debian's `prometheus-pushgateway`) with
`--metrics-interval 1`, pushing ten times as often as the default. The figure is the report's
msgs/s. Off and on alternate, `--pairs` times; the ratio printed is the median of the pairs'.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks.bench_swarm_command import DEVICES, SCENARIOS, compare, run_iot_swarm
from benchmarks.bench_swarm_mqtt import soilmet_payloads
from iotswarm_pipelines.local_broker import LocalMosquitto, free_port

TARGET = 0.95


@contextmanager
def pushgateway(workdir: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        raise SystemExit("prometheus-pushgateway is not installed: run `make services`")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "pushgateway.log").open("ab") as log:
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness, bounded
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the Pushgateway did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def metrics_port() -> int:
    """A free port below the kernel's ephemeral range (32768 up), so no outgoing connection
    (the swarm's own, or another program's) takes it before the shard binds it."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1))
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    n = args.messages - args.messages % (DEVICES * args.shards)
    scenario = SCENARIOS["2-shards" if args.shards == 2 else "per-device"]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        soilmet_payloads(workdir)  # writes the sample database the command reads
        broker = stack.enter_context(LocalMosquitto(workdir / "broker"))
        gateway = stack.enter_context(pushgateway(workdir))
        base = scenario.argv([broker.port], args.qos, n, workdir)

        def metrics_on() -> float:
            extra = ["--metrics-port", str(metrics_port()), "--pushgateway", gateway]
            return run_iot_swarm([*base, *extra, "--metrics-interval", "1"], n)

        print(f"Mosquitto on 127.0.0.1:{broker.port}, Pushgateway {gateway}; {n} messages")
        off, on, ratio = compare(
            f"QoS {args.qos}, {scenario.name}, metrics on/off",
            lambda: run_iot_swarm(base, n),
            metrics_on,
            args.pairs,
        )
        print(
            f"QoS {args.qos} | {scenario.name} | metrics on {on:,.0f} msgs/s | off {off:,.0f} "
            f"msgs/s | ratio {ratio:.2f} (target >= {TARGET})"
        )


if __name__ == "__main__":
    main()
