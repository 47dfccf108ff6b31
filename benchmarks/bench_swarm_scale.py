"""Many per-device connections from one host: shards over several brokers and source addresses.

Run: `.venv/bin/python -m benchmarks.bench_swarm_scale --devices 100000 --shards 6 --brokers 6`
(about 5 minutes; `--devices 20000 --shards 2 --brokers 2` proves the set-up in less).

Each shard is its own process (as under the swarm job), publishing `--devices / --shards`
per-device connections at QoS 1 with the verifier on, one message per device per minute for
`--minutes` minutes (first sends spread over the first minute). Shards take brokers and
loopback source addresses (127.0.0.2, 127.0.0.3, ...) round robin, the swarm's `for_shard`
rule: one process and one broker each stay under the open-file limit (20,000 here), one source
address under its ~28,000 ephemeral ports. Printed: connections, connect failures, sent,
acknowledged, delivered, lost, duplicated, latency p50/p95/p99 and the sum of the shard
processes' peak resident memory (an upper bound of their total at any moment).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from benchmarks.bench_swarm_mqtt import Stream, _peak_rss_mib, raise_open_files, soilmet_payloads
from iotswarm_pipelines.local_broker import LocalMosquitto
from iotswarm_pipelines.swarm.mqtt.engine import run_shard
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings, for_shard
from iotswarm_pipelines.swarm.mqtt.types import Schedule

FILES_PER_BROKER = 19_900  # the hard open-file limit here is 20,000 per process


def _shard(shard: int, devices: int, settings: MqttSettings, minutes: int, payloads, queue):
    prefix = f"iotswarm-scale-{shard}-{uuid.uuid4().hex[:6]}"
    streams = [
        Stream(f"{prefix}-{i:05d}", f"{prefix}/{i:05d}/data", payloads, 60.0, i)
        for i in range(devices)
    ]
    began = time.perf_counter()
    result = run_shard(
        shard,
        streams,
        settings,
        Schedule(max_cycles=minutes, delay_start=60.0, seed=shard),
        connections="per_device",
        verify=True,
    )
    queue.put((result, time.perf_counter() - began, _peak_rss_mib()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--brokers", type=int, default=6)
    parser.add_argument("--minutes", type=int, default=3, help="messages per device")
    parser.add_argument("--connect-rate", type=float, default=500.0, help="per shard")
    args = parser.parse_args()
    per_shard = -(-args.devices // args.shards)
    shards_per_broker = -(-args.shards // args.brokers)
    if per_shard * shards_per_broker + shards_per_broker > FILES_PER_BROKER:
        raise SystemExit(
            f"{per_shard * shards_per_broker} connections per broker exceed its open-file limit: "
            "use more brokers or shards"
        )
    raise_open_files()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        payloads = soilmet_payloads(workdir)
        brokers = [
            stack.enter_context(LocalMosquitto(workdir / f"broker-{b}"))
            for b in range(args.brokers)
        ]
        names = [f"127.0.0.1:{b.port}" for b in brokers]
        addresses = [f"127.0.0.{2 + s}" for s in range(args.shards)]
        base = MqttSettings(qos=1, connect_rate=args.connect_rate, keepalive=120)
        print(
            f"{args.devices} devices in {args.shards} shards of {per_shard}, brokers {names}, "
            f"source addresses {addresses[0]}..{addresses[-1]}, {args.minutes} msgs per device",
            flush=True,
        )
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        children = []
        for shard in range(args.shards):
            devices = min(per_shard, args.devices - shard * per_shard)
            settings = for_shard(base, shard, names, addresses)
            child = ctx.Process(
                target=_shard, args=(shard, devices, settings, args.minutes, payloads, queue)
            )
            child.start()
            children.append(child)
        outcomes = [queue.get() for _ in children]
        for child in children:
            child.join()
    results = [r for r, _, _ in outcomes]
    total = {
        k: sum(getattr(r, k) for r in results)
        for k in (
            "connections",
            "connect_failures",
            "sent",
            "acknowledged",
            "failed",
            "delivered",
            "lost",
            "duplicated",
        )
    }
    latencies = sorted(x for r in results for x in r.latencies_ms)
    p = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    rss = sum(m for _, _, m in outcomes)
    seconds = max(s for _, s, _ in outcomes)
    print(
        f"scale: {total['connections']} per-device connections "
        f"({total['connect_failures']} connect failures), {total['sent']} sent over "
        f"{seconds:.0f}s, acked {total['acknowledged']}, failed {total['failed']}, delivered "
        f"{total['delivered']}, lost {total['lost']}, duplicated {total['duplicated']}; "
        f"latency ms p50 {p[49]:.1f} p95 {p[94]:.1f} p99 {p[98]:.1f}; shard processes' peak "
        f"RSS summed {rss:,.0f} MiB (largest {max(m for _, _, m in outcomes):.0f} MiB)",
        flush=True,
    )
    for line in sorted({e for r in results for e in r.errors})[:8]:
        print("  error:", line)


if __name__ == "__main__":
    main()
