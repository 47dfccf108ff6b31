"""Fault scenarios of the control API (devices that ignore commands, answer late, or whose
downloads fail) and where the swarm turns control off, counted in the shard's result."""

from __future__ import annotations

import json
import queue
import uuid

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.payloads import DEFAULT_FORMAT
from iotswarm_pipelines.swarm.mqtt.types import ControlSettings, ShardResult
from iotswarm_pipelines.swarm.options import SwarmOptions
from iotswarm_pipelines.swarm.shard_runner import control_of
from iotswarm_tests.control_fixtures import WAIT, TeamClient, start_swarm

SOILMET = catalogue.SOILMET_30MIN

pytest_plugins = ("iotswarm_tests.mosquitto_fixtures",)


def run_with(mqtt_broker, qos: int = 1, **faults):
    """A one-device swarm with these fault shares, its progress reports in a queue."""
    group = f"cs/v2faults{uuid.uuid4().hex[:8]}"
    control = ControlSettings(group_id=group, reboot_seconds=0.2, **faults)
    progress: queue.Queue[ShardResult] = queue.Queue()
    swarm, thread = start_swarm(mqtt_broker, ["ALIC1"], control, qos, progress.put)
    return swarm, thread, progress


def wait_for(progress: queue.Queue, done) -> ShardResult:
    while True:
        result = progress.get(timeout=WAIT)
        if done(result):
            return result


def online(progress: queue.Queue) -> None:
    """The device has said online (its subscription to cc/ precedes it)."""
    wait_for(progress, lambda r: r.state_transitions.get("online"))


def stop(swarm, thread) -> ShardResult:
    swarm.stop.set()
    thread.join(60)
    return swarm.result["result"]


def test_a_device_that_ignores_commands_counts_them_and_never_answers(mqtt_broker):
    swarm, thread, progress = run_with(mqtt_broker, ignore_share=100)
    try:
        with TeamClient(swarm, "ALIC1") as client:
            online(progress)
            client.send("fileControl", b'{"action": "list"}')
            wait_for(progress, lambda r: "fileControl" in r.control)
    finally:
        result = stop(swarm, thread)
    counts = result.control["fileControl"]
    assert (counts.received, counts.answered) == (1, 0)
    assert result.control_faults == {"ignored": 1}
    assert all("/cr/" not in topic for topic, _ in client.drain())


def test_a_late_device_answers_and_counts_the_fault(mqtt_broker):
    swarm, thread, progress = run_with(
        mqtt_broker, late_share=100, late_median_s=0.05, late_p99_s=0.2
    )
    try:
        with TeamClient(swarm, "ALIC1") as client:
            online(progress)
            got = client.command("setting", b'{"action": "publish", "name": "EthernetPower"}')
    finally:
        result = stop(swarm, thread)
    assert got[-1] == (client.topic("cr", "setting"), b'{"setting":"EthernetPower","value":"2"}')
    assert result.control_faults == {"late": 1}
    assert result.control["setting"].answered == 1


def test_a_device_whose_downloads_fail(mqtt_broker):
    swarm, thread, progress = run_with(mqtt_broker, download_fail_share=100)
    try:
        with TeamClient(swarm, "ALIC1") as client:
            online(progress)
            payload = json.dumps({"url": "http://127.0.0.1:1/p.crb", "fileName": "p.crb"})
            got = client.command("program", payload.encode())
    finally:
        result = stop(swarm, thread)
    assert got[-1] == (client.topic("cr", "program"), b'{"error":"Program download failed"}')
    assert result.control_faults == {"download_failed": 1}
    assert result.control["program"].errors == 1


@pytest.mark.parametrize("qos", [1, 0])
def test_reboot_is_counted_with_its_state_messages(mqtt_broker, qos):
    swarm, thread, progress = run_with(mqtt_broker, qos)
    try:
        with TeamClient(swarm, "ALIC1") as client:
            online(progress)
            client.command("reboot", b'{"action": "reboot"}')
    finally:
        result = stop(swarm, thread)
    assert result.control["reboot"].answered == 1
    assert result.state_transitions["online"] == 2  # connect, back from the reboot
    # "Reboot command", then the goodbye at the end of the run (a clean disconnect sends no will)
    assert result.state_transitions["offline"] == 2


def test_control_is_off_with_a_shared_connection_saying_so_once():
    lines: list[str] = []
    options = SwarmOptions(connections="shared")
    assert control_of(options, SOILMET, None, DEFAULT_FORMAT, lines.append) is None  # type: ignore[arg-type]
    assert lines == [
        "command and control is off: it needs per_device connections (connections=shared)"
    ]


@pytest.mark.parametrize("options", [{"control": False}, {"device_type": "basic"}, {"dry": True}])
def test_control_is_off_when_asked_or_without_a_cr1000x(options):
    lines: list[str] = []
    assert control_of(SwarmOptions(**options), SOILMET, None, DEFAULT_FORMAT, lines.append) is None  # type: ignore[arg-type]
    assert lines == []


def test_control_accepts_the_tables_names_and_default():
    control = control_of(SwarmOptions(group_id="x/y"), SOILMET, None, DEFAULT_FORMAT, print)  # type: ignore[arg-type]
    assert control is not None and control.settings.group_id == "x/y"
    assert control.settings.tables == ("LEVEL1_SOILMET_30MIN", "LEVEL_1_SOILMET_30MIN", "default")
