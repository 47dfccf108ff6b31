"""Export and reconciliation metrics, pushed to a real Pushgateway and scraped by Prometheus.

``live-cosmos`` (and ``live-cosmos reconcile``) run as a user runs them, with ``pushgateway=``
in the config file or ``IOTSWARM_PUSHGATEWAY``; the figures must be the run's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from iotswarm_pipelines.export.health import FRESHNESS_THRESHOLDS
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.metrics.exposition import PUSHGATEWAY_ENV
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows
from iotswarm_tests.test_export_cli import LIVE_COSMOS, ROOT, config_for, run


def pushed(text: str, job: str) -> dict[str, float]:
    """The Pushgateway's samples of ``job``, keyed ``name{labels}`` (job/instance left out)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("job") != job or sample.name.endswith("_created"):
                continue
            extra = {k: v for k, v in sample.labels.items() if k not in ("job", "instance")}
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(extra.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def soilmet_rows(url: str) -> int:
    """Two hours of rows of two sites, ending an hour ago; how many."""
    newest = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    times = [newest - timedelta(minutes=30 * i) for i in range(4)]
    insert_rows(url, SOILMET, make_rows(SOILMET, "BALRD", times))
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    return 2 * len(times)


def test_a_live_export_pushes_its_figures_and_prometheus_scrapes_them(
    tmp_path, cosmos_url, pushgateway, start_prometheus
):
    rows = soilmet_rows(cosmos_url)
    config = config_for(tmp_path, cosmos_url, pushgateway=pushgateway.url, fallback_hours="24")
    before = time.time()
    done = run(str(config), SOILMET)
    assert done.returncode == 0, done.stderr
    table = f'table="{SOILMET}"'
    figures = pushed(pushgateway.text(), "iotswarm_export")
    assert figures[f"iotswarm_export_rows_total{{{table}}}"] == rows
    assert figures[f"iotswarm_export_objects_total{{{table}}}"] == rows  # batch_size 1
    assert figures[f"iotswarm_export_failures_total{{{table}}}"] == 0
    assert figures[f"iotswarm_export_max_watermark_lag_seconds{{{table}}}"] == 0  # all sent
    assert figures[f'iotswarm_export_watermark_lag_seconds{{site="ALIC1",{table}}}'] == 0
    threshold = FRESHNESS_THRESHOLDS[SOILMET].total_seconds()
    assert figures[f"iotswarm_export_freshness_threshold_seconds{{{table}}}"] == threshold
    success = figures[f"iotswarm_export_last_success_timestamp_seconds{{{table}}}"]
    assert before <= success <= time.time()
    assert figures[f"iotswarm_export_run_duration_seconds{{{table}}}"] > 0

    prometheus = start_prometheus(pushgateway=pushgateway)
    expr = f'iotswarm_export_rows_total{{job="iotswarm_export",{table}}}'
    assert prometheus.wait_for(expr, lambda v: v is not None) == rows


def test_a_failed_export_keeps_the_last_success_time_and_counts_one_failure(
    tmp_path, cosmos_url, pushgateway
):
    soilmet_rows(cosmos_url)
    config = config_for(tmp_path, cosmos_url, fallback_hours="24")
    env = {**os.environ, PUSHGATEWAY_ENV: pushgateway.url}  # the variable, not the file
    assert run_env(env, str(config), SOILMET).returncode == 0
    table = f'table="{SOILMET}"'
    success = pushed(pushgateway.text(), "iotswarm_export")[
        f"iotswarm_export_last_success_timestamp_seconds{{{table}}}"
    ]
    (tmp_path / "objects").rename(tmp_path / "gone")  # the next run cannot store: it fails
    (tmp_path / "objects").write_text("a file where the folder was")
    newest = utc_now().replace(minute=0, second=0, microsecond=0)
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", [newest]))
    failed = run_env(env, str(config), SOILMET)
    assert failed.returncode == 1
    figures = pushed(pushgateway.text(), "iotswarm_export")
    assert figures[f"iotswarm_export_failures_total{{{table}}}"] == 1
    assert figures[f"iotswarm_export_last_success_timestamp_seconds{{{table}}}"] == success
    assert figures[f"iotswarm_export_last_run_timestamp_seconds{{{table}}}"] > success


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LIVE_COSMOS), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_pushgateway_that_is_down_is_one_warning_and_the_export_succeeds(tmp_path, cosmos_url):
    rows = soilmet_rows(cosmos_url)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        config = config_for(tmp_path, cosmos_url, pushgateway=nobody, fallback_hours="24")
        done = run(str(config), SOILMET)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "could not push" in line]
    assert len(warnings) == 1 and nobody in warnings[0]
    assert str(rows) in done.stdout


def test_reconciliation_pushes_missing_rows_per_table_and_day(tmp_path, cosmos_url, pushgateway):
    soilmet_rows(cosmos_url)
    config = config_for(tmp_path, cosmos_url, pushgateway=pushgateway.url, fallback_hours="24")
    assert run(str(config), SOILMET).returncode == 0
    # A row older than the watermark that never reached the store: missing.
    day = utc_now().date() - timedelta(days=3)
    missed = utc_now().replace(year=day.year, month=day.month, day=day.day, hour=12, minute=0)
    insert_rows(
        cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", [missed.replace(second=0, microsecond=0)])
    )
    since = day.isoformat()
    done = run("reconcile", str(config), SOILMET, "--since", since, "--until", since)
    assert done.returncode == 1, done.stderr  # rows missing
    figures = pushed(pushgateway.text(), "iotswarm_reconcile")
    key = f'day="{since}",table="{SOILMET}"'
    assert figures[f"iotswarm_reconcile_missing_rows{{{key}}}"] == 1
    assert figures[f"iotswarm_reconcile_duplicated_rows{{{key}}}"] == 0
    assert figures[f"iotswarm_reconcile_orphaned_rows{{{key}}}"] == 0
    assert f'iotswarm_reconcile_last_run_timestamp_seconds{{table="{SOILMET}"}}' in figures
