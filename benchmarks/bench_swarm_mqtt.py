"""MQTT engine benchmarks against one private Mosquitto.

Run: `.venv/bin/python -m benchmarks.bench_swarm_mqtt` (about 5 minutes).

1. QoS 0 flood of CR1000X SOILMET payloads vs `mosquitto_pub -l` with the same payloads.
2. QoS 1 flood vs `mosquitto_pub -l -q 1`.
3. 20,000 per_device connections, one QoS 1 message a minute each for >= 2 minutes, verifier on:
   loss, publisher RSS, p99 latency.
4. The old swarm's configuration: 50 devices, one shared mutual-TLS connection, QoS 1, CR1000X,
   no sleep; msgs/s vs the old swarm's ~130 msgs/s.

Each scenario runs in a fresh process (so its peak RSS is its own); all use the same broker.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import trustme

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.local_broker import LocalMosquitto, free_port
from iotswarm_pipelines.payloads import cr1000x_payload, payload_json
from iotswarm_pipelines.swarm.mqtt.engine import run_shard
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings
from iotswarm_pipelines.swarm.mqtt.types import Message, Schedule

TABLE = "LEVEL1_SOILMET_30MIN"
SITES = ["ALIC1", "BALRD", "CHIMN", "COCLP", "EASTB", "GISBN", "HOLLN", "LODTN", "MORLY", "SHEEP"]
OLD_SWARM_MSGS_PER_S = 130.0
OPEN_FILES = 65536
FD_HEADROOM = 100  # listeners, verifier, log and library files of broker and publisher


def soilmet_payloads(workdir: Path) -> list[bytes]:
    """One CR1000X payload per generated SOILMET row (a day of 30-minute rows for 10 sites)."""
    url = f"sqlite:///{workdir / 'sample.db'}"
    generate(url, start=datetime(2024, 6, 1), end=datetime(2024, 6, 2), sites=SITES, tables=[TABLE])
    engine = sa.create_engine(url)
    table = schema.sa_table(catalogue.SOILMET_30MIN)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    engine.dispose()
    return [payload_json(cr1000x_payload(row["SITE_ID"], [row])).encode() for row in rows]


class Stream:
    """A device cycling through the shared payloads, `wait` seconds between sends."""

    def __init__(self, device_id: str, topic: str, payloads: list[bytes], wait: float, start: int):
        self.device_id, self.topic = device_id, topic
        self._payloads, self._wait, self._i = payloads, wait, start

    def next_message(self) -> Message:
        self._i += 1
        return Message(self._payloads[self._i % len(self._payloads)], self._wait)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _engine_run(kwargs: dict, queue) -> None:
    """Child process body: one run_shard call; reports the result and the child's peak RSS."""
    payloads = kwargs.pop("payloads")
    n, wait = kwargs.pop("devices"), kwargs.pop("wait")
    prefix = f"iotswarm-bench-{uuid.uuid4().hex[:8]}"
    devices = [
        Stream(f"{prefix}-{i:05d}", f"{prefix}/{i:05d}/data", payloads, wait, i) for i in range(n)
    ]
    began = time.perf_counter()
    result = run_shard(0, devices, **kwargs)
    seconds = time.perf_counter() - began
    queue.put((result, seconds, _peak_rss_mib()))


def engine(**kwargs):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_engine_run, args=(kwargs, queue))
    child.start()
    out = queue.get()
    child.join()
    return out


def mosquitto_pub(port: int, lines: Path, qos: int) -> float:
    topic = f"iotswarm-bench-{uuid.uuid4().hex[:8]}/pub/data"
    began = time.perf_counter()
    with lines.open("rb") as stdin:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                topic,
                "-q",
                str(qos),
                "-l",
            ],
            stdin=stdin,
            check=True,
        )
    return time.perf_counter() - began


def flood(broker: LocalMosquitto, payloads: list[bytes], workdir: Path, qos: int, n: int) -> None:
    lines = workdir / "payloads.txt"
    with lines.open("wb") as out:
        for i in range(n):
            out.write(payloads[i % len(payloads)] + b"\n")
    c_seconds = mosquitto_pub(broker.port, lines, qos)
    settings = MqttSettings(port=broker.port, qos=qos, max_publish_rate=0, connect_rate=0)
    result, seconds, _ = engine(
        payloads=payloads,
        devices=1,
        wait=0.0,
        settings=settings,
        schedule=Schedule(max_cycles=n),
        connections="shared",
    )
    ours, theirs = result.acknowledged / seconds, n / c_seconds
    target = 0.5 if qos == 0 else 0.3
    print(
        f"flood QoS {qos}: {n} x {len(payloads[0]) / 1024:.1f} KiB; engine {ours:,.0f} msgs/s "
        f"(acked {result.acknowledged}, failed {result.failed}); mosquitto_pub -l {theirs:,.0f} "
        f"msgs/s; ratio {ours / theirs:.2f} (target >= {target})",
        flush=True,
    )


def scale(broker: LocalMosquitto, payloads: list[bytes], devices: int, minutes: int) -> None:
    settings = MqttSettings(port=broker.port, qos=1, connect_rate=500, keepalive=120)
    result, seconds, rss = engine(
        payloads=payloads,
        devices=devices,
        wait=60.0,
        settings=settings,
        schedule=Schedule(max_cycles=minutes + 1, delay_start=60.0),
        connections="per_device",
        verify=True,
    )
    lat = sorted(result.latencies_ms)
    p = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    print(
        f"scale: {devices} per_device connections ({result.connections} opened, "
        f"{result.connect_failures} connect failures), {result.sent} sent over {seconds:.0f}s, "
        f"acked {result.acknowledged}, delivered {result.delivered}, lost {result.lost}, "
        f"duplicated {result.duplicated}; publisher peak RSS {rss:.0f} MiB; latency ms "
        f"p50 {p[49]:.1f} p95 {p[94]:.1f} p99 {p[98]:.1f}",
        flush=True,
    )
    for line in result.errors[:5]:
        print("  error:", line)


def old_swarm(tls_port: int, files: dict[str, str], payloads: list[bytes], n: int) -> None:
    settings = MqttSettings(
        port=tls_port, qos=1, tls=True, max_publish_rate=0, connect_rate=0, **files
    )
    result, seconds, _ = engine(
        payloads=payloads,
        devices=50,
        wait=0.0,
        settings=settings,
        schedule=Schedule(max_cycles=n // 50),
        connections="shared",
    )
    rate = result.acknowledged / seconds
    print(
        f"old swarm config (50 devices, 1 shared mutual-TLS connection, QoS 1): {result.sent} "
        f"sent, {result.acknowledged} acked in {seconds:.1f}s = {rate:,.0f} msgs/s; "
        f"{rate / OLD_SWARM_MSGS_PER_S:.0f}x the old ~130 msgs/s (target >= 20x)",
        flush=True,
    )


def tls_listener(workdir: Path) -> tuple[int, str, dict[str, str]]:
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("bench-device")
    paths = {}
    for name, blob in {
        "ca": ca.cert_pem,
        "server": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }.items():
        paths[name] = str(workdir / f"{name}.pem")
        blob.write_to_path(paths[name])
    port = free_port()
    config = (
        f"listener {port} 127.0.0.1\ncafile {paths['ca']}\ncertfile {paths['server']}\n"
        f"keyfile {paths['server_key']}\nrequire_certificate true\n"
    )
    files = {"ca_file": paths["ca"], "cert_file": paths["client"], "key_file": paths["client_key"]}
    return port, config, files


def raise_open_files() -> int:
    """Lift this process's open-file limit (inherited by the broker and publishers) as far as
    allowed: to OPEN_FILES when privileged, else to the hard limit. Returns the limit reached."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, max(hard, OPEN_FILES)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-floods", action="store_true")
    parser.add_argument("--messages", type=int, default=20000, help="messages per flood")
    parser.add_argument("--devices", type=int, default=20000, help="connections in the scale run")
    parser.add_argument("--minutes", type=int, default=2, help="minutes of sends in the scale run")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    devices = args.devices
    hard = raise_open_files()
    if devices + FD_HEADROOM > hard:
        devices = hard - FD_HEADROOM
        print(
            f"open-file hard limit here is {hard} (raising it needs CAP_SYS_RESOURCE): the broker "
            f"and the publisher can each hold at most ~{hard} sockets, so the scale run uses "
            f"{devices} connections instead of {args.devices}",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        payloads = soilmet_payloads(workdir)
        tls_port, tls_config, tls_files = tls_listener(workdir)
        with LocalMosquitto(workdir / "broker", extra_config=tls_config) as broker:
            print(
                f"Mosquitto on 127.0.0.1:{broker.port} (TLS {tls_port}); {len(payloads)} payloads"
            )
            if not args.skip_floods:
                flood(broker, payloads, workdir, qos=0, n=args.messages)
                flood(broker, payloads, workdir, qos=1, n=args.messages)
                old_swarm(tls_port, tls_files, payloads, args.messages)
            if not args.skip_scale:
                scale(broker, payloads, devices, args.minutes)


if __name__ == "__main__":
    main()
