"""Issue 15: scenario phases. An outage whose backlog is uploaded in order on reconnecting, a
ramp of devices joining, per-phase figures in the report, one-line errors for bad options.

``iot-swarm`` runs as a real process against the real Mosquitto; every row is checked by an
independent subscriber (a paho client of the test, not the swarm's verifier). Simulated time:
a 1-minute table in loop mode at ``--sleep-time 0.05`` plays a simulated minute in 0.05 s, so
"30 simulated minutes" take 1.5 seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg
import paho.mqtt.client as paho
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import scenario
from iotswarm_pipelines.swarm.assets import swarm_report_asset
from iotswarm_pipelines.swarm.cli import main
from iotswarm_pipelines.swarm.launch import cli_swarm_job
from iotswarm_pipelines.swarm.mqtt.types import ShardResult
from iotswarm_pipelines.swarm.options import SwarmOptions
from iotswarm_pipelines.swarm.report import render_markdown, summarize
from iotswarm_tests.services import wait_until

pytest_plugins = ("iotswarm_tests.mosquitto_fixtures",)

T0 = datetime(2024, 6, 1)
PRECIP_TABLE = catalogue.PRECIP_1MIN
PRECIP = PRECIP_TABLE.name


@pytest.fixture(scope="module")
def precip_url(tmp_path_factory) -> str:
    """Two sites of 1-minute rain gauge rows, two hours from 2024-06-01 00:00."""
    url = f"sqlite:///{tmp_path_factory.mktemp('scenarios') / 'cosmos.sqlite'}"
    generate(url, start=T0, end=T0 + timedelta(hours=2), sites=["ALIC1", "BALRD"], tables=[PRECIP])
    return url


@dataclass
class Subscriber:
    """Every row of every device under ``prefix``, in arrival order per device topic."""

    prefix: str
    rows: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    first_arrival: list[str] = field(default_factory=list)  # device topics, first message order
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _client, _userdata, message: paho.MQTTMessage) -> None:
        times = [row["time"] for row in json.loads(message.payload)["data"]]
        with self.lock:
            if message.topic not in self.rows:
                self.first_arrival.append(message.topic)
            self.rows[message.topic].extend(times)
            self.count += len(times)


@pytest.fixture
def subscriber(mqtt_broker) -> Iterator[Subscriber]:
    host, port = mqtt_broker
    watcher = Subscriber(f"iotswarm-scenario-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{watcher.prefix}-check")
    client.on_message = watcher.on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(f"{watcher.prefix}/#", qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        assert subscribed.wait(30), "the test's subscriber got no SUBACK"
        yield watcher
    finally:
        client.disconnect()
        client.loop_stop()


def iot_swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def expected_times(rows: int) -> list[str]:
    """The payload times of the first ``rows`` rows of the 1-minute table."""
    return [f"{T0 + timedelta(minutes=k):%Y-%m-%dT%H:%M:%S}.000000" for k in range(1, rows + 1)]


def test_outage_of_20_of_50_devices_delivers_every_row_once_in_order(
    precip_url, mqtt_broker, subscriber, tmp_path
):
    host, port = mqtt_broker
    cycles = 60
    result = iot_swarm(
        "--source", precip_url, "--table", PRECIP, "--host", host, "--port", str(port),
        "--devices", "50", "--mode", "loop", "--sleep-time", "0.05", "--max-cycles", str(cycles),
        "--qos", "1", "--verify", "--mqtt-prefix", subscriber.prefix,
        "--sessions-dir", str(tmp_path), "--outage-share", "40", "--outage-start", "10",
        "--outage-minutes", "30", "--progress-interval", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The swarm is done once its verifier saw everything; the test's own subscriber may still
    # be taking the last few off its socket.
    wait_until(lambda: subscriber.count >= 50 * cycles, 60, "every row at the test's subscriber")
    assert len(subscriber.rows) == 50
    want = expected_times(cycles)
    for topic, times in subscriber.rows.items():
        assert times == want, f"{topic}: rows missing, repeated or out of order"
    # 20 devices each logged 30 rows offline: 600 backlog rows, one message each.
    assert "backlog: 600 msgs, drained in " in out, out
    assert re.search(r"phase outage: [\d.]+ s, \d+ msgs", out), out
    catch_up = re.search(r"phase catch-up: .* reconnects (\d+)", out)
    assert catch_up and int(catch_up.group(1)) == 20, out
    assert "lost 0, duplicated 0" in out


def test_network_wide_outage_longer_than_give_up_after_uploads_batched_backlogs(
    precip_url, mqtt_broker, subscriber, tmp_path
):
    """Every device offline for 40 simulated minutes (2 s) with give_up_after 1 s: a planned
    outage is not a broker gone, so the run carries on; each device's 40 backlog rows go out
    as messages of up to 7 rows (7+7+7+7+7+5), still in order and each row once."""
    host, port = mqtt_broker
    result = iot_swarm(
        "--source", precip_url, "--table", PRECIP, "--host", host, "--port", str(port),
        "--devices", "10", "--mode", "loop", "--sleep-time", "0.05", "--max-cycles", "50",
        "--qos", "1", "--verify", "--mqtt-prefix", subscriber.prefix,
        "--sessions-dir", str(tmp_path), "--outage-share", "100", "--outage-start", "5",
        "--outage-minutes", "40", "--backlog-batch", "7", "--give-up-after", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gave up" not in result.stdout
    assert "backlog: 60 msgs, drained in " in result.stdout, result.stdout
    wait_until(lambda: subscriber.count >= 10 * 50, 60, "every row at the test's subscriber")
    assert len(subscriber.rows) == 10
    assert all(times == expected_times(50) for times in subscriber.rows.values())


def test_swarm_job_reports_the_phases_on_the_report_asset(precip_url, mqtt_broker):
    """The swarm job (iot-swarm's, resources from the run config): two shards, half of 8
    devices offline for 5 simulated minutes; the report asset's materialization carries the
    per-phase numbers."""
    host, port = mqtt_broker
    name = f"iotswarm-phases-{uuid.uuid4().hex[:8]}"
    config = {
        "table": PRECIP, "source": "cosmos", "mode": "loop", "devices": 8, "shards": 2,
        "max_cycles": 12, "sleep_time": 0.1, "qos": 1, "verify": True, "swarm_name": name,
        "mqtt_prefix": name, "outage_share": 50, "outage_start": 2, "outage_minutes": 5,
    }  # fmt: skip
    run_config = {
        "ops": {"plan_swarm": {"config": config}},
        "resources": {
            "mqtt": {"config": {"host": host, "port": port}},
            "cosmos": {"config": {"url": precip_url}},
        },
    }
    with dg.instance_for_test() as instance:
        result = cli_swarm_job.execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("swarm_report")
    assert materialization.asset_key == swarm_report_asset.key
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["backlog_messages"] == 4 * 5 and metadata["catch_up_reconnects"] == 4
    assert metadata["backlog_drain_s"] >= 0
    assert metadata["lost"] == 0 and metadata["duplicated"] == 0 and metadata["delivered"] == 96
    for phase in ("steady", "outage", "catch_up", "after"):
        assert isinstance(metadata[f"{phase}_msgs_per_s"], float), phase
    assert "| outage |" in metadata["summary"] and "drained in" in metadata["summary"]


@pytest.mark.parametrize(
    ("profile", "groups"),
    [("step", [list(range(0, 5)), list(range(5, 10)), list(range(10, 15))]), ("linear", None)],
)
def test_ramp_devices_join_in_the_order_of_the_profile(
    precip_url, mqtt_broker, subscriber, tmp_path, profile, groups
):
    """A step ramp of 15 devices in 3 steps over 60 simulated minutes (6 s): every device of a
    step starts before any of the next; a linear ramp starts them one by one in device order.
    A device of a later step is held off (its connection too) until its step comes."""
    host, port = mqtt_broker
    template = "dev-{i:02d}"
    result = iot_swarm(
        "--source", precip_url, "--table", PRECIP, "--host", host, "--port", str(port),
        "--devices", "15", "--device-id-template", template, "--mode", "loop",
        "--sleep-time", "0.1", "--max-cycles", "5", "--qos", "1", "--verify",
        "--mqtt-prefix", subscriber.prefix, "--sessions-dir", str(tmp_path), "--ramp", profile,
        "--ramp-minutes", "60", "--ramp-steps", "3", "--progress-interval", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_until(lambda: subscriber.count >= 15 * 5, 60, "every row at the test's subscriber")
    order = [int(topic.rsplit("dev-", 1)[1][:2]) for topic in subscriber.first_arrival]
    if groups:
        position = {device: k for k, group in enumerate(groups) for device in group}
        assert [position[d] for d in order] == sorted(position[d] for d in order), order
    else:
        assert order == sorted(order)
    assert re.search(r"phase ramp: [\d.]+ s, \d+ msgs", result.stdout), result.stdout
    assert all(times == expected_times(5) for times in subscriber.rows.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outage-share", "40"], "outage_minutes"),
        (["--outage-minutes", "30"], "outage_minutes needs outage_share"),
        (["--outage-share", "140", "--outage-minutes", "30"], "outage_share is a percentage"),
        (["--outage-share", "40", "--outage-minutes", "30", "--mode", "replay"], "mode loop"),
        (
            ["--outage-share", "40", "--outage-minutes", "30", "--connections", "shared"],
            "connections per_device",
        ),
        (["--outage-share", "40", "--outage-minutes", "0.5"], "shorter than one row"),
        (["--outage-share", "40", "--outage-minutes", "30", "--max-cycles", "20"], "max_cycles"),
        (["--outage-share", "40", "--outage-minutes", "30", "--backlog-batch", "0"], "at least"),
        (["--ramp", "linear"], "ramp linear needs ramp_minutes"),
        (["--ramp-minutes", "10"], "ramp_minutes needs ramp linear or step"),
        (["--ramp", "sigmoid", "--ramp-minutes", "10"], "invalid choice: 'sigmoid'"),
    ],
)
def test_bad_phase_options_are_one_line_and_exit_2(precip_url, args, message, capsys):
    argv = ["--source", precip_url, "--table", PRECIP, "--mode", "loop", "--max-cycles", "100"]
    assert exit_status([*argv, *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[-1], captured.err
    assert captured.out == ""


def exit_status(argv: list[str]) -> int:
    """``main``'s status, also when argparse exits (a choice it does not know)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_phase_rules_pick_devices_and_join_times_by_profile():
    ids = [f"D{k:02d}" for k in range(10)]
    base = dict(table=PRECIP, mode="loop", sleep_time=0.5, max_cycles=100, seed=3)
    chosen = scenario.outage_devices(SwarmOptions(**base, outage_share=30), ids)
    assert len(chosen) == 3
    assert chosen == scenario.outage_devices(SwarmOptions(**base, outage_share=30), ids[::-1])
    # 20 simulated minutes of a 1-minute table at 0.5 s per row: 10 real seconds.
    step = scenario.join_after(
        SwarmOptions(**base, ramp="step", ramp_minutes=20, ramp_steps=2), PRECIP_TABLE, ids
    )
    assert [step[d] for d in ids] == [0.0] * 5 + [5.0] * 5
    linear = scenario.join_after(
        SwarmOptions(**base, ramp="linear", ramp_minutes=20), PRECIP_TABLE, ids
    )
    assert [linear[d] for d in ids] == [float(k) for k in range(10)]
    shards = scenario.for_shards(
        SwarmOptions(**base, outage_share=30, outage_start=5, outage_minutes=30),
        PRECIP_TABLE,
        [ids[:5], ids[5:]],
    )
    assert shards[0].outage_devices | shards[1].outage_devices == chosen
    assert (shards[0].outage_start_cycle, shards[0].outage_cycles) == (5, 30)


def test_report_per_phase_from_two_shards():
    """Latencies are placed by arrival time; the drain runs from the first device back online
    to the last backlog acknowledgement over all shards."""

    def shard(k: int, offset: float) -> ShardResult:
        start = 1000.0 + offset
        return ShardResult(
            shard=k, devices=2, connections=2, sent=10, acknowledged=10, verified=True,
            delivered=10, started_at=start, ended_at=start + 10,
            latencies_ms=[1.0, 2.0, 50.0, 60.0, 3.0], latency_times=[start + 1, start + 2,
            start + 4.5, start + 5.5, start + 9],
            phase_marks={"outage_start": start + 3, "outage_end": start + 5, "drained": start + 6},
            phase_messages={"steady": 4, "catch-up": 4, "after": 2},
            phase_reconnects={"catch-up": 1}, backlog_messages=4,
        )  # fmt: skip

    report = summarize([shard(0, 0.0), shard(1, 0.5)])
    phases = {p.name: p for p in report.phases}
    assert list(phases) == ["steady", "outage", "catch-up", "after"]
    assert phases["catch-up"].messages == 8 and phases["catch-up"].reconnects == 2
    assert phases["outage"].latency_p99_ms == 50.0  # arrived during the outage window
    assert phases["catch-up"].latency_p50_ms == 60.0
    assert report.backlog_drain_s == pytest.approx(1.5)
    metadata = report.metadata()
    assert metadata["backlog_drain_s"] == 1.5 and metadata["catch_up_messages"] == 8
    assert "phase catch-up: " in render_markdown(report)
