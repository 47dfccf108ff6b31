"""The MQTT engine against real Mosquitto brokers: delivery, TLS, credentials, restarts, stops."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import uuid

import paho.mqtt.client as paho
import pytest

from iotswarm_pipelines.swarm.mqtt import window
from iotswarm_pipelines.swarm.mqtt.engine import run_shard
from iotswarm_pipelines.swarm.mqtt.settings import (
    BrokerRefusedError,
    BrokerUnreachableError,
    MqttConfigError,
    MqttSettings,
    check_broker,
    for_shard,
)
from iotswarm_pipelines.swarm.mqtt.types import Message, Schedule, ShardResult
from iotswarm_pipelines.swarm.options import host_and_port
from iotswarm_tests.services import free_port

FAST = {"connect_rate": 0.0, "max_publish_rate": 0.0, "connect_timeout": 5.0}


@dataclasses.dataclass
class Device:
    """A device sending `count` small JSON messages, `wait` seconds apart."""

    device_id: str
    topic: str
    count: int = 3
    wait: float = 0.0
    position: int = 0

    def next_message(self) -> Message | None:
        if self.count and self.position >= self.count:
            return None
        self.position += 1
        body = {"device": self.device_id, "n": self.position, "pad": "x" * 200}
        return Message(json.dumps(body).encode(), self.wait)


def make_devices(n: int, count: int = 3, wait: float = 0.0) -> tuple[str, list[Device]]:
    prefix = f"iotswarm-mqtt-engine-{uuid.uuid4().hex[:10]}"
    devices = [
        Device(f"{prefix}-d{i:03d}", f"{prefix}/d{i:03d}/data", count, wait) for i in range(n)
    ]
    return prefix, devices


def assert_exactly_once(result: ShardResult, expected: int) -> None:
    assert result.sent == expected
    assert result.acknowledged == expected
    assert result.failed == 0
    assert result.verified
    assert (result.delivered, result.lost, result.duplicated) == (expected, 0, 0)
    assert len(result.latencies_ms) == expected
    assert sum(row[1] for row in result.timeline) == expected
    assert sum(row[2] for row in result.timeline) == expected


@pytest.mark.parametrize(
    ("connections", "protocol"),
    [("per_device", "3.1.1"), ("shared", "3.1.1"), ("per_device", "5"), ("shared", "5")],
)
def test_qos1_every_message_delivered_exactly_once(mqtt_broker, connections, protocol):
    host, port = mqtt_broker
    _, devices = make_devices(40, count=3)
    settings = MqttSettings(host=host, port=port, qos=1, protocol=protocol, **FAST)
    result = run_shard(
        3, devices, settings, Schedule(max_cycles=3), connections=connections, verify=True
    )
    assert_exactly_once(result, 120)
    assert result.connections == (40 if connections == "per_device" else 1)
    assert result.shard == 3 and result.devices == 40
    assert result.errors == []


def test_a_shard_shares_one_window_among_its_connections():
    """Thousands of per-device connections cannot each hold a full window of payloads, and no
    connection is ever left without a window."""
    assert window.connection_window(1, 1) == window.QOS1_WINDOW
    assert window.connection_window(0, 50) == window.QOS0_WINDOW
    assert window.connection_window(1, 5_000) * 5_000 <= window.SHARD_WINDOW
    assert window.connection_window(0, 20_000) == 1
    assert window.connection_window(1, 1_000_000) == 1


@pytest.mark.parametrize("qos", [0, 1])
def test_a_flood_with_one_publish_per_connection_in_flight_delivers_all(
    mqtt_broker, monkeypatch, qos
):
    monkeypatch.setattr(window, "SHARD_WINDOW", 40)  # 40 connections: a window of 1 each
    host, port = mqtt_broker
    _, devices = make_devices(40, count=20)
    settings = MqttSettings(host=host, port=port, qos=qos, **FAST)
    result = run_shard(0, devices, settings, Schedule(max_cycles=20), verify=True)
    assert_exactly_once(result, 800)


def test_qos0_is_written_and_delivered(mqtt_broker):
    host, port = mqtt_broker
    _, devices = make_devices(30, count=2)
    settings = MqttSettings(host=host, port=port, qos=0, **FAST)
    result = run_shard(0, devices, settings, Schedule(max_cycles=2), verify=True)
    assert result.sent == result.acknowledged == 60
    assert result.delivered == 60 and result.lost == 0


class Listener:
    """A plain paho subscriber on a topic prefix, on its own thread, collecting payloads."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.payloads: list[bytes] = []
        self.subscribed = threading.Event()
        self.sentinel = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _client, _userdata, message) -> None:
        if message.payload == b"sentinel":
            self.sentinel.set()
        else:
            self.payloads.append(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_dry_run_sends_nothing(mqtt_broker):
    host, port = mqtt_broker
    prefix, devices = make_devices(10, count=3)
    listener = Listener(host, port, prefix)
    try:
        result = run_shard(
            0, devices, MqttSettings(host=host, port=port, **FAST), Schedule(3), dry=True
        )
        # Anything the run had published reaches the broker before this later sentinel.
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2)
        sender.connect(host, port)
        sender.loop_start()
        sender.publish(f"{prefix}/sentinel", b"sentinel", qos=1).wait_for_publish(10)
        assert listener.sentinel.wait(10)
        sender.disconnect()
        sender.loop_stop()
    finally:
        listener.close()
    assert result.sent == 30 and result.connections == 0 and result.acknowledged == 0
    assert all(d.position == 3 for d in devices)
    assert listener.payloads == []


def test_no_send_probability_100_skips_every_cycle(mqtt_broker):
    host, port = mqtt_broker
    _, devices = make_devices(10, count=5)
    schedule = Schedule(max_cycles=4, no_send_probability=100)
    result = run_shard(0, devices, MqttSettings(host=host, port=port, **FAST), schedule)
    assert result.skipped == 40 and result.sent == 0 and result.acknowledged == 0
    assert all(d.position == 4 for d in devices)  # a skipped cycle consumes its message


def test_mutual_tls_delivers(tls_broker, tls_files):
    _, devices = make_devices(10, count=2)
    settings = MqttSettings(
        port=tls_broker.port,
        tls=True,
        ca_file=tls_files.ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
        **FAST,
    )
    result = run_shard(0, devices, settings, Schedule(max_cycles=2), verify=True)
    assert_exactly_once(result, 20)


def test_wrong_client_certificate_is_refused(tls_broker, tls_files):
    settings = MqttSettings(
        port=tls_broker.port,
        tls=True,
        ca_file=tls_files.ca,
        cert_file=tls_files.rogue_cert,
        key_file=tls_files.rogue_key,
        **FAST,
    )
    with pytest.raises(BrokerRefusedError, match=f"127.0.0.1:{tls_broker.port}"):
        check_broker(settings, timeout=5)


def test_server_certificate_is_checked_unless_insecure(tls_broker, tls_files):
    client_files = {"cert_file": tls_files.client_cert, "key_file": tls_files.client_key}
    settings = MqttSettings(port=tls_broker.port, tls=True, **client_files, **FAST)
    with pytest.raises(BrokerRefusedError, match="certificate"):
        check_broker(settings, timeout=5)
    check_broker(settings.model_copy(update={"tls_insecure": True}), timeout=5)


def test_username_and_password(password_broker):
    _, devices = make_devices(5, count=1)
    good = MqttSettings(port=password_broker.port, username="swarm", password="s3cret-pass", **FAST)
    result = run_shard(0, devices, good, Schedule(max_cycles=1), verify=True)
    assert_exactly_once(result, 5)
    bad = good.model_copy(update={"password": "wrong-pass"})
    with pytest.raises(BrokerRefusedError) as refused:
        run_shard(0, devices, bad, Schedule(max_cycles=1))
    assert "wrong-pass" not in str(refused.value)


def test_unreachable_broker_fails_fast():
    settings = MqttSettings(port=free_port(), **FAST)
    with pytest.raises(BrokerUnreachableError, match="connection refused"):
        run_shard(0, make_devices(3)[1], settings, Schedule())


def test_broker_restart_mid_run_loses_nothing(persistent_broker):
    """The broker is stopped once acks start flowing and restarted on the same port.

    Persistent sessions on a broker that saves them: what it had accepted but not yet
    forwarded reaches the verifier after the restart, and paho re-sends what it had not acked.
    """
    _, devices = make_devices(20, count=25, wait=0.02)
    settings = MqttSettings(
        port=persistent_broker.port,
        qos=1,
        clean_session=False,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.4,
        **FAST,
    )
    restarted = threading.Event()

    def on_progress(progress: ShardResult) -> None:
        if progress.acknowledged >= 100 and not restarted.is_set():
            restarted.set()
            persistent_broker.stop()
            threading.Thread(target=persistent_broker.start).start()

    result = run_shard(
        0,
        devices,
        settings,
        Schedule(max_cycles=25),
        verify=True,
        on_progress=on_progress,
        progress_interval=0.02,
    )
    assert restarted.is_set()
    counts = (result.sent, result.acknowledged, result.failed, result.delivered, result.lost)
    assert counts == (500, 500, 0, 500, 0), result
    assert any("lost" in line for line in result.errors)


def test_should_stop_ends_an_endless_run_with_a_result(mqtt_broker):
    host, port = mqtt_broker
    _, devices = make_devices(5, count=0, wait=0.01)
    seen = threading.Event()

    def on_progress(progress: ShardResult) -> None:
        if progress.sent >= 50:
            seen.set()

    result = run_shard(
        0,
        devices,
        MqttSettings(host=host, port=port, **FAST),
        Schedule(max_cycles=0),
        verify=True,
        should_stop=seen.is_set,
        on_progress=on_progress,
        progress_interval=0.05,
    )
    assert result.sent >= 50
    assert result.acknowledged == result.delivered == result.sent
    assert result.lost == 0


def test_settings_are_checked_and_never_show_the_password(tmp_path):
    with pytest.raises(MqttConfigError, match="qos 2 is not supported"):
        MqttSettings(qos=2).validate()
    missing = tmp_path / "nope.pem"
    with pytest.raises(MqttConfigError, match="does not exist"):
        MqttSettings(tls=True, ca_file=str(missing)).validate()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(MqttConfigError, match="not a PEM"):
        MqttSettings(tls=True, ca_file=str(garbage)).validate()
    settings = MqttSettings(username="swarm", password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings)


def test_a_silent_server_is_reported_not_waited_for():
    """A TCP listener that never answers CONNECT (e.g. a TLS port without tls) times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        settings = MqttSettings(port=server.getsockname()[1], **FAST)
        with pytest.raises(BrokerUnreachableError, match="no CONNACK"):
            check_broker(settings, timeout=1)


def test_shards_bind_their_source_address_and_take_brokers_round_robin(broker_pair):
    """Three shards over two brokers and two loopback source addresses: each broker's own log
    shows which address every device connected from."""
    names = [f"127.0.0.1:{b.port}" for b in broker_pair]
    prefixes = []
    for shard in range(3):
        settings = for_shard(MqttSettings(qos=1, **FAST), shard, names, ["127.0.0.2", "127.0.0.3"])
        prefix, devices = make_devices(4, count=2)
        prefixes.append(prefix)
        result = run_shard(shard, devices, settings, Schedule(max_cycles=2), verify=True)
        assert_exactly_once(result, 8)
    for broker in broker_pair:
        broker.stop()  # so its log is complete
    logs = [b.log_path.read_text() for b in broker_pair]
    for shard, prefix in enumerate(prefixes):
        seen = re.findall(rf"connected from ([\d.]+):\d+ as ({prefix}-d\d+)", logs[shard % 2])
        source = f"127.0.0.{2 + shard % 2}"
        assert sorted(seen) == [(source, f"{prefix}-d{i:03d}") for i in range(4)]
        assert prefix not in logs[(shard + 1) % 2]


def test_bad_brokers_and_source_addresses_are_one_line_errors():
    with pytest.raises(MqttConfigError, match="'localhost-ish' is not an IP address"):
        MqttSettings(source_address="localhost-ish").validate()
    with pytest.raises(MqttConfigError, match="port 'x' is not a number"):
        for_shard(MqttSettings(), 0, ["broker.example:x"])
    assert host_and_port("[::1]:1884", 1883) == ("::1", 1884)
    assert host_and_port("broker.example", 8883) == ("broker.example", 8883)
    with pytest.raises(BrokerUnreachableError, match=r"source address 192\.0\.2\.7"):
        check_broker(MqttSettings(source_address="192.0.2.7", **FAST), timeout=2)
