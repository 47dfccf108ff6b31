"""Live swarm metrics, read back through a real Prometheus and a real Pushgateway.

``iot-swarm`` runs two shards (one process each), each serving ``/metrics`` on its own port
and pushing to the Pushgateway; Prometheus scrapes all three. The figures Prometheus holds at
the end must be the swarm's own report: sent, delivered, lost.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.metrics.swarm import ShardMetrics
from iotswarm_pipelines.swarm.mqtt.types import LiveCounts, ShardResult
from iotswarm_tests.test_swarm_cli import REFERENCE_CSV


def two_free_ports() -> int:
    """A port whose successor is free too (shard 0 and shard 1), below the kernel's ephemeral
    range (32768 up), so no outgoing connection takes either before the shards bind them."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("0.0.0.0", port))
                second.bind(("0.0.0.0", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def report_figure(text: str, name: str) -> int:
    return int(re.search(rf"\b{name} (\d+)", text).group(1))


def test_prometheus_sees_both_shards_live_and_the_reports_figures_at_the_end(
    mqtt_broker, pushgateway, start_prometheus, tmp_path
):
    host, port = mqtt_broker
    metrics_port = two_free_ports()
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    shards = [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{metrics_port + 1}"]
    prometheus = start_prometheus({"shards": shards}, pushgateway=pushgateway)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
            "--source", str(REFERENCE_CSV), "--mode", "loop", "--per-site", "6",
            "--max-cycles", "0", "--sleep-time", "0.2", "--shards", "2", "--verify",
            "--host", host, "--port", str(port), "--mqtt-prefix", name, "--swarm-name", name,
            "--sessions-dir", str(tmp_path), "--metrics-port", str(metrics_port),
            "--pushgateway", pushgateway.url, "--metrics-interval", "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # While it runs, both shard endpoints are scraped and their sends climb.
        live = f'iotswarm_swarm_messages_sent_total{{job="shards",swarm="{name}"}} > 0'
        prometheus.wait_for(f"count({live})", lambda v: v == 2, timeout=180)
        assert prometheus.value(f'sum(iotswarm_swarm_running{{job="shards",swarm="{name}"}})') == 2
        proc.send_signal(signal.SIGINT)  # devices run until stopped: stop them, get the report
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err  # interrupted by ^C (the report is still made)
    sent, delivered = report_figure(out, "sent"), report_figure(out, "delivered")
    lost = report_figure(out, "lost")
    assert sent > 0

    # Each shard's last push says it finished; the scrape that shows both holds the final figures.
    pushed = f'{{job="iotswarm_swarm",swarm="{name}"}}'
    prometheus.wait_for(f"count(iotswarm_swarm_running{pushed} == 0)", lambda v: v == 2)
    assert prometheus.value(f"sum(iotswarm_swarm_messages_sent_total{pushed})") == sent
    assert prometheus.value(f"sum(iotswarm_swarm_messages_delivered_total{pushed})") == delivered
    assert prometheus.value(f"sum(iotswarm_swarm_messages_lost_total{pushed})") == lost
    by_shard = prometheus.values(f"iotswarm_swarm_messages_sent_total{pushed}", by="shard")
    assert set(by_shard) == {"0", "1"} and all(v > 0 for v in by_shard.values())
    acknowledged = prometheus.value(f"sum(iotswarm_swarm_messages_acknowledged_total{pushed})")
    assert acknowledged == report_figure(out, "acknowledged")
    # Every acknowledged publish was timed; its histogram counts each exactly once.
    count = prometheus.value(f"sum(iotswarm_swarm_publish_latency_seconds_count{pushed})")
    assert count == acknowledged
    delivered_timed = f"sum(iotswarm_swarm_end_to_end_latency_seconds_count{pushed})"
    assert prometheus.value(delivered_timed) == delivered
    assert prometheus.value(f"sum(iotswarm_swarm_connections_up{pushed})") == 0


def test_metrics_port_in_use_fails_the_shard_with_one_line(mqtt_broker, tmp_path):
    host, port = mqtt_broker
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
                "--source", str(REFERENCE_CSV), "--mode", "loop", "--per-site", "1",
                "--max-cycles", "1", "--host", host, "--port", str(port),
                "--sessions-dir", str(tmp_path), "--metrics-port", str(busy),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"shard 0: cannot serve metrics on port {busy}" in proc.stderr + proc.stdout


def test_a_pushgateway_that_is_down_warns_once_and_the_swarm_goes_on(mqtt_broker, tmp_path):
    host, port = mqtt_broker
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()[1]  # bound, never listening: connections are refused
        proc = subprocess.run(
            [
                sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
                "--source", str(REFERENCE_CSV), "--mode", "loop", "--per-site", "2",
                "--max-cycles", "2", "--sleep-time", "0.1", "--host", host, "--port", str(port),
                "--sessions-dir", str(tmp_path), "--log-level", "INFO",
                "--pushgateway", f"127.0.0.1:{nobody}", "--metrics-interval", "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sent 4 " in proc.stdout
    assert f"could not push to the Pushgateway 127.0.0.1:{nobody}" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics-port", "65535", "--shards", "2"], "needs ports up to 65536"),
        (["--pushgateway", "ftp://x"], "is not a Pushgateway address"),
        (["--metrics-interval", "0"], "metrics_interval must be at least 0.5"),
    ],
)
def test_bad_metrics_options_are_one_line_before_any_device_starts(args, message, capsys):
    from iotswarm_pipelines.swarm.cli import main

    assert main(["--source", str(REFERENCE_CSV), "--dry", *args]) == 2
    assert message in capsys.readouterr().err


def test_counters_follow_the_books_per_phase_and_end_at_the_result():
    """Unit: deltas between looks land in the phase of the look; the end is the result."""
    metrics = ShardMetrics("unit", 3, planned=12)
    books = ShardResult(shard=3, devices=4, connections=4, verified=True)
    books.sent, books.acknowledged, books.phase_messages = 5, 4, {"steady": 5}
    metrics.observe(LiveCounts(books, "steady", 4, 4, delivered=3, publish_latencies=[0.002] * 4))
    books.sent, books.acknowledged = 9, 9
    books.phase_messages = {"steady": 5, "outage": 4}
    metrics.observe(LiveCounts(books, "outage", 2, 4, delivered=9))
    books.unsent, books.lost, books.delivered = 3, 0, 9
    metrics.finish(books)
    text = exposition_text(metrics)
    assert text['iotswarm_swarm_messages_acknowledged_total{phase="steady"}'] == 4
    assert text['iotswarm_swarm_messages_acknowledged_total{phase="outage"}'] == 5
    assert text['iotswarm_swarm_messages_sent_total{phase="outage"}'] == 4
    assert text["iotswarm_swarm_messages_planned"] == 12  # sent 9 + skipped 0 + unsent 3
    assert text['iotswarm_swarm_phase{phase="outage"}'] == 1
    assert text['iotswarm_swarm_phase{phase="steady"}'] == 0
    assert text["iotswarm_swarm_publish_latency_seconds_count"] == 4
    assert text['iotswarm_swarm_publish_latency_seconds_bucket{le="0.0025"}'] == 4
    assert text['iotswarm_swarm_publish_latency_seconds_bucket{le="0.001"}'] == 0
    assert text["iotswarm_swarm_running"] == 0


def exposition_text(metrics: ShardMetrics) -> dict[str, float]:
    """Samples keyed ``name{extra labels}`` (swarm and shard left out)."""
    from prometheus_client import generate_latest

    samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            extra = {k: v for k, v in sample.labels.items() if k not in ("swarm", "shard")}
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(extra.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_pushgateway_url_comes_from_the_variable(monkeypatch):
    monkeypatch.setenv(exposition.PUSHGATEWAY_ENV, "http://gw:9091")
    assert exposition.pushgateway_url(None) == "http://gw:9091"
    assert exposition.pushgateway_url("other:9091") == "other:9091"
    monkeypatch.delenv(exposition.PUSHGATEWAY_ENV)
    assert exposition.pushgateway_url(None) is None


def test_the_old_command_tree_pushes_too(pushgateway, tmp_path):
    """``iot-swarm looping-csv … mqtt CLIENT_ID --pushgateway``: a dry run's figures arrive."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
            "looping-csv", "--file", str(REFERENCE_CSV), "mqtt", "old-client", "--dry",
            "--max-cycles", "3", "--sleep-time", "0", "--swarm-name", "old-tree",
            "--pushgateway", pushgateway.url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sent = report_figure(proc.stdout, "sent")
    samples = [
        s
        for family in text_string_to_metric_families(pushgateway.text())
        for s in family.samples
        if s.name == "iotswarm_swarm_messages_sent_total" and s.labels["swarm"] == "old-tree"
    ]
    assert sent > 0 and sum(s.value for s in samples) == sent
    assert {s.labels["job"] for s in samples} == {"iotswarm_swarm"}


def test_the_metrics_package_loads_no_dagster():
    code = (
        "import sys, iotswarm_pipelines.metrics.swarm, iotswarm_pipelines.metrics.export, "
        "iotswarm_pipelines.metrics.exposition; print('dagster' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr
