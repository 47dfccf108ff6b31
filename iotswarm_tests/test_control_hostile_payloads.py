"""Hostile payloads on a device's command topics never crash the run or touch another device:
each input either works or gets the real logger's answer (or, where a logger ignores what it
cannot parse, none). Property-based (hypothesis), on the protocol and through a real broker.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotswarm_pipelines.payloads import DEFAULT_FORMAT
from iotswarm_pipelines.swarm.control import logger as logger_module
from iotswarm_pipelines.swarm.control.logger import LoggerState
from iotswarm_pipelines.swarm.control.protocol import (
    COMMANDS,
    Download,
    Fetch,
    Logger,
    Publish,
    ReadHistory,
    Restart,
)
from iotswarm_pipelines.swarm.control.topics import Topics
from iotswarm_pipelines.swarm.mqtt.types import ControlSettings
from iotswarm_tests.control_fixtures import TABLE, TeamClient, start_swarm

KNOWN_ANSWERS = {
    "Reboot complete",
    "Directory '{}' does not exist",
    "File does not exist",
    "File delete failed",
    "File deleted",
    "Program stopped",
    "Program running",
    "No constant table to edit",
    "No constant table changes",
    "Editing constants succeeded",
    "Settings set successfully",
    "Settings applied, no reboot required",
    "Invalid setting: {}",
    "Set variable succeeded",
    "Set variable failed",
    "Invalid field: {}",
    "Historic Data: Table does not exist!",
    "Historic Data: start and end must be ISO 8601 times",
    "Program download failed",
    "Program loaded successfully",
    "OS Download Failed",
    "MQTT Config file download failed, code: 0",
    "MQTT Config file parse failed",
    "MQTT configuration file loaded",
    "Illegal ComPort",
    "ComPort must be open to use MQTT Talk Thru",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "action",
        "name",
        "value",
        "apply",
        "drive",
        "fileName",
        "filename",
        "table",
        "start",
        "end",
        "url",
        "comPort",
        "outString",
        "ScanInterval",
        "const1",
    ]
)
actions = st.sampled_from(["list", "delete", "stop", "run", "set", "apply", "publish", "reboot"])
objects = st.dictionaries(keys, json_values | actions, max_size=5)
payloads = (
    st.binary(max_size=200)
    | objects.map(lambda o: json.dumps(o).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.integers(1, 5000).map(lambda depth: b"[" * depth)
)
# Topic levels a broker accepts (Mosquitto drops a client that publishes control characters).
commands = st.sampled_from(COMMANDS) | st.text(
    st.characters(whitelist_categories=("L", "N", "P", "S"), blacklist_characters="#+/"),
    max_size=12,
)


def new_logger(device: str) -> Logger:
    state = LoggerState(device, "ALIC1", "CPU:iotswarm.CR1X", (TABLE,))
    return Logger(state, Topics("cs/v2", device), DEFAULT_FORMAT)


def answer_text(publish: Publish) -> str | None:
    body = json.loads(publish.payload)
    return body.get("error") or body.get("success") or body.get("response")


def known(text: str) -> bool:
    """One of the real logger's answers (those with a name or drive in them by their start)."""
    return any(
        text.startswith(pattern.split("{}")[0]) if "{}" in pattern else text == pattern
        for pattern in KNOWN_ANSWERS
    )


def follow(logger: Logger, actions: list) -> list[Publish]:
    """Every message the actions lead to, with downloads failing and historic reads empty."""
    out: list[Publish] = []
    for action in actions:
        if isinstance(action, Publish):
            out.append(action)
        elif isinstance(action, Restart):
            out.extend(action.then)
        elif isinstance(action, Fetch):
            out.extend(follow(logger, logger.fetched(action, Download(None))))
        elif isinstance(action, ReadHistory):
            assert action.start is not None and action.end is not None
            out.extend(follow(logger, logger.history(action.table, [])))
    return out


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(commands, payloads), min_size=1, max_size=8))
def test_any_payload_works_or_gets_the_loggers_answer(sequence):
    defaults = copy.deepcopy((logger_module.SETTINGS, logger_module.CONSTANTS))
    target, other = new_logger("ALIC1"), new_logger("BUNNY")
    before = copy.deepcopy(vars(other.state))
    for command, payload in sequence:
        actions = target.handle(command, payload)
        for publish in follow(target, actions):
            # only the device's own topics, and JSON the team's client can read
            assert publish.topic.startswith(("cs/v2/cr/ALIC1/", "cs/v2/state/ALIC1/"))
            body = json.loads(publish.payload)
            assert isinstance(body, dict)
            if "cr/" in publish.topic and not publish.topic.endswith("/cj"):
                text = answer_text(publish)
                if text is not None:
                    assert known(str(text)), text
    assert vars(other.state) == before
    assert defaults == (logger_module.SETTINGS, logger_module.CONSTANTS)


@pytest.fixture(scope="module")
def hostile_swarm(mqtt_broker):
    group = f"cs/v2hostile{uuid.uuid4().hex[:8]}"
    control = ControlSettings(
        group_id=group, reboot_seconds=0.2, tables=(TABLE,), download_timeout_s=2.0
    )
    swarm, thread = start_swarm(mqtt_broker, ["ALIC1", "BUNNY"], control)
    with TeamClient(swarm, "BUNNY") as watcher:
        watcher.wait_for_state("online", "BUNNY")
    yield swarm
    swarm.stop.set()
    thread.join(60)
    assert not thread.is_alive()


def answers_listing(swarm, device: str) -> bool:
    """The device answers a file listing (retried while a hostile reboot keeps it away)."""
    with TeamClient(swarm, device) as client:
        for _ in range(10):
            client.send("fileControl", b'{"action": "list"}')
            try:
                got = client.until(
                    lambda seen: any(t == client.topic("cr", "fileControl") for t, _ in seen)
                )
            except AssertionError:
                continue
            return any(b'"fileList"' in p for _, p in got)
    return False


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(commands, payloads), min_size=1, max_size=5))
def test_hostile_commands_through_the_broker_leave_the_run_and_other_devices_alone(
    hostile_swarm, sequence
):
    with TeamClient(hostile_swarm, "ALIC1") as attacker:
        for command, payload in sequence:
            topic = attacker.topic("cc", command)
            attacker.client.publish(topic, payload, qos=1).wait_for_publish(10)
    assert threading.active_count() < 100  # no thread per command or device


def test_after_the_hostile_commands_every_device_still_answers(hostile_swarm):
    assert answers_listing(hostile_swarm, "BUNNY")
    assert answers_listing(hostile_swarm, "ALIC1")
    assert "result" not in hostile_swarm.result  # the run is still going
