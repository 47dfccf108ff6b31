"""A running swarm shard that answers commands, and the team's client side of the API in paho.

The client does what NERC-CEH/campbell-mqtt-control's `mqtt-control` does: subscribe to the
device's `cr` and `state` topics, publish the command's payload to `cc`, then read what comes
back. Waits end on the messages themselves (a queue), bounded by a timeout.
"""

from __future__ import annotations

import http.server
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.payloads import PayloadFormat
from iotswarm_pipelines.swarm import data
from iotswarm_pipelines.swarm.devices import DevicePlan
from iotswarm_pipelines.swarm.mqtt.engine import Control, run_shard
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings
from iotswarm_pipelines.swarm.mqtt.types import ControlSettings, Schedule, ShardResult

SAMPLE = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
TABLE = catalogue.SOILMET_30MIN.name
HISTORY_START = datetime(2024, 6, 1)
HISTORY_ROWS = 600  # 30-minute rows: 12.5 days, about 700 KB of payload (several messages)
WAIT = 30.0  # seconds a client waits for an answer (the team's client waits 20-30)
FORMAT = PayloadFormat(prog_name="CPU:iotswarm.CR1X")
MQTT_CONFIG = b"\x00\x20" + b"\x00\x05\x00\x12test.mosquitto.org" + b"\x00"


class History:
    """A site's rows every 30 minutes, the sample's values over and over: an in-memory
    `RowSource` like the CSV and COSMOS ones."""

    def __init__(self, sites: list[str]) -> None:
        template = data.read_csv_rows(SAMPLE, catalogue.SOILMET_30MIN)[0]
        self.rows = {
            site: [
                {
                    **template,
                    "SITE_ID": site,
                    "DATE_TIME": HISTORY_START + timedelta(minutes=30 * k),
                }
                for k in range(HISTORY_ROWS)
            ]
            for site in sites
        }

    def sites(self) -> list[str]:
        return sorted(self.rows)

    def latest_rows(self, site_ids):
        return {s: self.rows[s][-1] for s in site_ids if s in self.rows}

    def rows_after(self, site_id, after, limit):
        rows = [r for r in self.rows.get(site_id, []) if after is None or r["DATE_TIME"] > after]
        return rows[:limit]


@dataclass
class Swarm:
    group_id: str
    devices: list[str]
    source: History
    result: dict[str, ShardResult]
    stop: threading.Event
    host: str
    port: int


def start_swarm(
    mqtt_broker: tuple[str, int],
    devices: list[str],
    control: ControlSettings,
    qos: int = 1,
    on_progress: Callable[[ShardResult], None] | None = None,
) -> tuple[Swarm, threading.Thread]:
    host, port = mqtt_broker
    sites = sorted({d.split("-")[0] for d in devices})
    source = History(sites)
    plans = [DevicePlan(d, d.split("-")[0], f"iotswarm-test/{d}") for d in devices]
    streams = data.build_streams(
        plans, source, mode="loop", device_type="cr1000x", sleep_time=0.5, payload_format=FORMAT
    )
    settings = MqttSettings(
        host=host, port=port, qos=qos, connect_rate=0.0, max_publish_rate=0.0, connect_timeout=5
    )
    swarm = Swarm(control.group_id, devices, source, {}, threading.Event(), host, port)

    def read(site: str, start: datetime, end: datetime):
        return data.rows_between(source, site, start, end)

    def work() -> None:
        swarm.result["result"] = run_shard(
            0,
            streams,
            settings,
            Schedule(max_cycles=0),
            control=Control(control, read, FORMAT),
            should_stop=swarm.stop.is_set,
            on_progress=on_progress,
            progress_interval=0.1,
        )

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return swarm, thread


@pytest.fixture(scope="module")
def swarm(mqtt_broker) -> Iterator[Swarm]:
    """Two mirrored devices and a clone, answering on a group of their own."""
    group = f"cs/v2test{uuid.uuid4().hex[:8]}"
    settings = ControlSettings(group_id=group, reboot_seconds=0.3, tables=(TABLE, "default"))
    devices = ["ALIC1", "BUNNY", "ALIC1-00001"]
    host, port = mqtt_broker
    watch = Swarm(group, devices, History([]), {}, threading.Event(), host, port)
    clients = [TeamClient(watch, device) for device in devices]  # listening before the start
    running, thread = start_swarm(mqtt_broker, devices, settings)
    try:
        for device, client in zip(devices, clients, strict=True):
            with client:  # every device online before the first command
                client.wait_for_state("online", device)
        yield running
    finally:
        running.stop.set()
        thread.join(60)


class TeamClient:
    """The team's client for one device: subscribed to its `cr` and `state` topics."""

    def __init__(self, swarm: Swarm, device: str) -> None:
        self.group, self.device = swarm.group_id, device
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, f"team-{uuid.uuid4().hex}")
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect(swarm.host, swarm.port)
        self.client.loop_start()
        self.client.subscribe(
            [(f"{self.group}/cr/{device}/#", 1), (f"{self.group}/state/{device}/", 1)]
        )
        assert subscribed.wait(WAIT), "the broker never acknowledged the subscription"

    def __enter__(self) -> TeamClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def topic(self, kind: str, rest: str = "") -> str:
        return f"{self.group}/{kind}/{self.device}/{rest}"

    def send(self, command: str, payload: bytes) -> None:
        self.client.publish(self.topic("cc", command), payload, qos=1).wait_for_publish(WAIT)

    def until(self, done: Callable[[list[tuple[str, bytes]]], bool]) -> list[tuple[str, bytes]]:
        """Messages received until ``done`` says the answer is complete."""
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + WAIT
        while not done(seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no complete answer within {WAIT}s; got {seen}"
            try:
                seen.append(self.messages.get(timeout=left))
            except queue.Empty:
                continue
        return seen

    def command(self, command: str, payload: bytes, answers: int = 1) -> list[tuple[str, bytes]]:
        """Send, then read until ``answers`` messages on a `cr` topic have come."""
        self.send(command, payload)
        prefix = self.topic("cr")
        return self.until(lambda seen: sum(t.startswith(prefix) for t, _ in seen) >= answers)

    def wait_for_state(self, state: str, device: str) -> None:
        text = f'{{"clientId":"{device}","state":"{state}"}}'.encode()
        self.until(lambda seen: any(p == text for _, p in seen))

    def drain(self) -> list[tuple[str, bytes]]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out


class Files(http.server.BaseHTTPRequestHandler):
    """The download server: an OS image, programs, MQTT config files good and bad, a 404."""

    bodies: dict[str, bytes] = {
        "/os/CR1000X.Std.08.01.obj": b"OS" * 1000,
        "/programs/testfile.crb": b"BeginProg\nEndProg\n",
        "/mqtt/good.bin": MQTT_CONFIG,
        "/mqtt/bad.bin": b"<html>not a config</html>",
    }

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
