"""A fleet-wide reboot: one client reboots every device of a swarm at once (or asks getVar).

Run: `.venv/bin/python -m benchmarks.bench_swarm_control --devices 10000` (a few minutes;
`--devices 1000` proves the set-up in less than one).

A private Mosquitto on loopback; one swarm shard (the engine the `iot-swarm` shard steps run,
in this process) of `--devices` per-device connections, each device a clone of the sample's
site publishing a SOILMET row every `--sleep-time` seconds at QoS 1, answering the control API
(group cs/v2, reboot delay `--reboot-seconds`, connect rate `--connect-rate` per second, as
iot-swarm's defaults). Once every device has said online and `--quiet-seconds` of steady
publishing have passed, a paho client (as the team's mqtt-control) subscribed to
`cs/v2/cr/+/reboot` and `cs/v2/state/+/` publishes `{"action": "reboot"}` to every device's
`cs/v2/cc/<device>/reboot`, all at once.

Printed: the time from the first reboot command until every device has answered "Reboot
complete" and said online again; the answer latency p50/p99 (the engine's, receipt to answer);
the swarm's data publish rate in the quiet window before the storm against the rate during it
(the ratio is the storm's cost to publishing: with every device offline for the reboot delay
and then reconnecting at the connect rate, it cannot be 1); the peak PSS of this process
(engine, client and data; the broker is apart). Exit status 1 when a device never answered.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import paho.mqtt.client as paho

from benchmarks.bench_swarm_mqtt import raise_open_files
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.local_broker import LocalMosquitto
from iotswarm_pipelines.swarm import data
from iotswarm_pipelines.swarm.devices import plan_devices
from iotswarm_pipelines.swarm.mqtt.engine import Control, run_shard
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings
from iotswarm_pipelines.swarm.mqtt.types import ControlSettings, Schedule, ShardResult
from iotswarm_pipelines.swarm.report import percentile

SAMPLE = Path(__file__).parents[1] / "iotswarm_tests" / "data"
SAMPLE_CSV = SAMPLE / "level1_soilmet_30min_alic1_sample.csv"
TABLE = catalogue.SOILMET_30MIN.name
GROUP = "cs/v2"
STORMS = {"reboot": b'{"action": "reboot"}', "getVar": b'{"name": "BattV"}'}


class Rows:
    """The sample's first row every 30 minutes for a year: the clones' shared history."""

    def __init__(self) -> None:
        row = data.read_csv_rows(SAMPLE_CSV, catalogue.SOILMET_30MIN)[0]
        start = datetime(2024, 1, 1)
        self.rows = [{**row, "DATE_TIME": start + timedelta(minutes=30 * k)} for k in range(17520)]

    def sites(self) -> list[str]:
        return ["ALIC1"]

    def latest_rows(self, site_ids):
        return {"ALIC1": self.rows[-1]}

    def rows_after(self, site_id, after, limit):
        rows = [r for r in self.rows if after is None or r["DATE_TIME"] > after]
        return rows[:limit]


def pss_mib() -> float:
    text = Path("/proc/self/smaps_rollup").read_text()
    return (
        next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")) / 1024
    )


class Watcher:
    """The team's client: who is online, and who answered the reboot, with timestamps."""

    def __init__(self, port: int, devices: int, command: str) -> None:
        self.devices = devices
        self.command = command  # reboot: answered and back online; getVar: answered
        self.online: set[str] = set()
        self.answered: dict[str, float] = {}
        self.back_online: dict[str, float] = {}
        self.rebooting = False
        self.all_online = threading.Event()
        self.all_done = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, "bench-team-client")
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=120)
        self.client.loop_start()
        self.client.subscribe([(f"{GROUP}/cr/+/{command}", 1), (f"{GROUP}/state/+/", 1)])
        assert subscribed.wait(30)

    def _message(self, _c, _u, message: paho.MQTTMessage) -> None:
        device = message.topic.split("/")[3]
        now = time.monotonic()
        if "/state/" in message.topic:
            if b'"online"' in message.payload:
                self.online.add(device)
                if self.rebooting:
                    self.back_online.setdefault(device, now)
                if len(self.online) >= self.devices:
                    self.all_online.set()
            elif b"Reboot command" in message.payload:
                self.online.discard(device)
        elif self.rebooting:
            self.answered.setdefault(device, now)
        online = self.command != "reboot" or len(self.back_online) >= self.devices
        if self.rebooting and len(self.answered) >= self.devices and online:
            self.all_done.set()

    def command_all(self, device_ids: list[str]) -> float:
        self.rebooting = True
        began = time.monotonic()
        payload = STORMS[self.command]
        for device in device_ids:
            self.client.publish(f"{GROUP}/cc/{device}/{self.command}", payload, qos=1)
        return began


def rate(result: ShardResult, start: float, end: float) -> float:
    """Data messages per second sent between two wall-clock times, from the shard timeline."""
    sent = sum(
        n for second, n, _d, _l in result.timeline if start <= result.started_at + second < end
    )
    return sent / max(end - start, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--sleep-time", type=float, default=20.0)
    parser.add_argument("--reboot-seconds", type=float, default=5.0)
    parser.add_argument("--connect-rate", type=float, default=200.0)
    parser.add_argument("--quiet-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--command",
        choices=sorted(STORMS),
        default="reboot",
        help="reboot (devices go offline) or getVar (answers only: publishing's own cost)",
    )
    args = parser.parse_args()
    raise_open_files()
    with TemporaryDirectory() as tmp:
        broker = LocalMosquitto(Path(tmp)).start()
        try:
            return run(args, broker.port)
        finally:
            broker.stop()


def run(args: argparse.Namespace, port: int) -> int:
    plans = plan_devices(["ALIC1"], devices=args.devices, prefix="bench", suffix="data")
    source = Rows()
    streams = data.build_streams(
        plans, source, mode="loop", device_type="cr1000x", sleep_time=args.sleep_time
    )
    settings = MqttSettings(host="127.0.0.1", port=port, qos=1, connect_rate=args.connect_rate)
    control = Control(
        ControlSettings(group_id=GROUP, reboot_seconds=args.reboot_seconds, tables=(TABLE,)),
        lambda site, start, end: data.rows_between(source, site, start, end),
    )
    watcher = Watcher(port, args.devices, args.command)
    stop = threading.Event()
    outcome: dict[str, ShardResult] = {}
    peak = [pss_mib()]

    def work() -> None:
        outcome["result"] = run_shard(
            0,
            streams,
            settings,
            Schedule(max_cycles=0, delay_start=args.sleep_time, seed=1),
            control=control,
            should_stop=stop.is_set,
        )

    engine = threading.Thread(target=work, name="bench-engine", daemon=True)
    began = time.time()
    engine.start()

    def wait(event: threading.Event, what: str) -> None:
        deadline = time.monotonic() + args.timeout
        while not event.wait(1.0):
            peak[0] = max(peak[0], pss_mib())
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up waiting for {what} after {args.timeout:g}s")

    wait(watcher.all_online, "every device online")
    up = time.time()
    print(
        f"{args.devices} devices online in {up - began:.1f} s "
        f"(connect rate {args.connect_rate:g}/s)"
    )
    quiet_end = time.monotonic() + args.quiet_seconds
    while time.monotonic() < quiet_end:
        time.sleep(1.0)  # a steady window to measure the publish rate in (not a synchronisation)
        peak[0] = max(peak[0], pss_mib())
    storm_wall = time.time()
    storm = watcher.command_all([p.device_id for p in plans])
    try:
        wait(watcher.all_done, f"every {args.command} answered")
    finally:
        done_wall = time.time()
        stop.set()
        engine.join(120)
    result = outcome["result"]
    took = max([*watcher.answered.values(), *watcher.back_online.values()]) - storm
    latencies = result.control[args.command].latencies_ms
    before = rate(result, storm_wall - args.quiet_seconds, storm_wall)
    during = rate(result, storm_wall, done_wall)
    print(
        f"{args.command} storm: {len(watcher.answered)}/{args.devices} answered (reboot: "
        f"and online again) in {took:.1f} s (reboot delay {args.reboot_seconds:g} s); answer p50 "
        f"{percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
    )
    print(
        f"publish rate: {before:.1f} msgs/s before, {during:.1f} msgs/s during the storm "
        f"(ratio {during / max(before, 1e-9):.2f}); sent {result.sent}, acknowledged "
        f"{result.acknowledged}, failed {result.failed}"
    )
    print(f"peak PSS of the swarm process: {peak[0]:.0f} MiB")
    print(json.dumps({k: v for k, v in result.state_transitions.items()}))
    return 0 if len(watcher.answered) == args.devices else 1


if __name__ == "__main__":
    raise SystemExit(main())
