"""The shipped alert rules fire in a real Alertmanager for a stale table and a lossy swarm.

A real Prometheus evaluates a test copy of deploy/prometheus/iotswarm-rules.yml (every ``for:``
cut to 0 s, so no test waits minutes) on what ``live-cosmos`` and ``iot-swarm`` push to a real
Pushgateway, and sends its alerts to a real Alertmanager, whose API the test reads.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows
from iotswarm_tests.mosquitto_fixtures import Mosquitto
from iotswarm_tests.prometheus_fixtures import (
    alertmanager_server,
    prometheus_config,
    prometheus_server,
    pushgateway_server,
)
from iotswarm_tests.test_export_cli import config_for, run
from iotswarm_tests.test_swarm_cli import REFERENCE_CSV

HALF_HOUR = timedelta(minutes=30)
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "iotswarm-rules.yml"


def fast_rules(folder: Path) -> Path:
    """The shipped rules with every ``for:`` at 0 s (the expressions exactly as shipped)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    path = folder / "iotswarm-rules-fast.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def wait_for_alert(alertmanager, timeout: float = 120.0, **labels: str) -> dict:
    """Poll (bounded) until Alertmanager holds an active alert with ``labels``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = [a for a in alertmanager.alerts(**labels) if a["status"]["state"] == "active"]
        if active:
            return active[0]
        time.sleep(0.5)
    held = [a["labels"] for a in alertmanager.alerts()]
    raise AssertionError(f"no active alert {labels} after {timeout:g}s; Alertmanager holds {held}")


@pytest.fixture
def alerting(tmp_path):
    """Pushgateway -> Prometheus (the fast rules) -> Alertmanager. The Prometheus labels its
    alerts with this test's own id: another test's Prometheus that still sends to a port this
    Alertmanager now holds cannot make this test pass."""
    with pushgateway_server(tmp_path) as pushgateway, alertmanager_server(tmp_path) as manager:
        config = prometheus_config(
            {}, pushgateway=pushgateway, alertmanager=manager, rule_files=[fast_rules(tmp_path)]
        )
        test_id = uuid.uuid4().hex
        config["global"]["external_labels"] = {"iotswarm_test": test_id}
        with prometheus_server(tmp_path, config):
            yield pushgateway, functools.partial(wait_for_alert, manager, iotswarm_test=test_id)


def test_a_table_behind_its_source_fires_table_behind(tmp_path, cosmos_url, alerting):
    """4.5 hours of rows, exported only up to three hours ago (``--until``): the table's one
    site trails its source by 3 h, twice its freshness threshold (1.5 h)."""
    pushgateway, alert_of = alerting
    newest = utc_now().replace(minute=0, second=0, microsecond=0)
    insert_rows(
        cosmos_url,
        SOILMET,
        make_rows(SOILMET, "ALIC1", [newest - i * HALF_HOUR for i in range(10)]),
    )
    config = config_for(tmp_path, cosmos_url, pushgateway=pushgateway.url, fallback_hours="24")
    until = (newest - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    done = run(str(config), SOILMET, "--until", until)
    assert done.returncode == 0, done.stderr

    alert = alert_of(alertname="IotswarmTableBehind", table=SOILMET)
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == (
        f"COSMOS table {SOILMET} is behind its freshness threshold"
    )
    assert "was 3h 0m 0s behind" in alert["annotations"]["description"]


def sent_so_far(pushgateway, name: str) -> float | None:
    """The swarm's sends as last pushed (None before its first push)."""
    sent = [
        sample.value
        for family in text_string_to_metric_families(pushgateway.text())
        for sample in family.samples
        if sample.name == "iotswarm_swarm_messages_sent_total"
        and sample.labels.get("swarm") == name
    ]
    return sum(sent) if sent else None


def wait_until_sent(pushgateway, name: str, proc, above: float) -> float:
    deadline = time.monotonic() + 120
    while (sent := sent_so_far(pushgateway, name)) is None or sent <= above:  # bounded poll
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"the swarm's pushed sends stayed at {sent}"
        time.sleep(0.2)
    return sent


def test_a_swarm_whose_broker_dies_mid_run_fires_disconnected_then_lost(tmp_path, alerting):
    """The broker hangs, then is killed (SIGSTOP, SIGKILL): what the devices wrote to it at QoS 0
    while it hung never reaches the verifier. While the shard runs on with no connection,
    Disconnected fires; once ^C ends the run and its verifier has counted, LostMessages fires."""
    pushgateway, alert_of = alerting
    broker = Mosquitto(tmp_path, "listener {port} 127.0.0.1\nallow_anonymous true\n").start()
    name = f"lossy-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
            "--source", str(REFERENCE_CSV), "--mode", "loop", "--per-site", "20",
            "--max-cycles", "0", "--sleep-time", "0.05", "--verify", "--qos", "0",
            "--port", str(broker.port), "--mqtt-prefix", name, "--swarm-name", name,
            "--sessions-dir", str(tmp_path), "--pushgateway", pushgateway.url,
            "--metrics-interval", "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until_sent(pushgateway, name, proc, above=0)
        broker.process.send_signal(signal.SIGSTOP)  # hung: it reads nothing more
        frozen_at = sent_so_far(pushgateway, name)
        wait_until_sent(pushgateway, name, proc, above=frozen_at)  # written into the hung broker
        broker.process.kill()  # then gone, with everything it had not read
        broker.process.wait(timeout=10)
        disconnected = alert_of(alertname="IotswarmSwarmDisconnected", swarm=name)
        proc.send_signal(signal.SIGINT)  # unlimited cycles: stop it, get the report
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        broker.stop()
    assert re.search(r"lost [1-9]\d*", out), out + err
    lost = alert_of(alertname="IotswarmSwarmLostMessages", swarm=name)
    assert lost["labels"]["severity"] == "critical"
    assert lost["annotations"]["summary"] == f"Swarm {name} lost messages"
    assert disconnected["labels"]["shard"] == "0"
    assert disconnected["annotations"]["summary"] == f"Shard 0 of swarm {name} has no connection"
