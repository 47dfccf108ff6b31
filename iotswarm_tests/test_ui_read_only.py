"""The everyone-facing webserver of docs/deploying.md: ``dagster-webserver --read-only``.

Runs, an asset's materialization and its checks' results are made through a real writable
webserver and daemon first; then the same instance is served read-only, and every way the UI
launches or switches something (a run, a backfill, a sensor) must be refused while what was
recorded stays visible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.sample.generator import default_range
from iotswarm_tests.dagster_server import (
    SENSORS_QUERY,
    STOP_SENSOR,
    DagsterServer,
    GraphQLError,
    dagster_server,
    local_deployment,
)

TABLE = "LEVEL1_NMDB_1HOUR"
RUN_TIMEOUT = 180

RUN_IDS = "{ runsOrError { ... on Runs { results { runId status } } ... on Error { message } } }"

LIVE_EXPORT = """
query Asset($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(limit: 5) { runId partition } }
  }
}
"""

HEALTH_CHECKS = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
      name executionForLatestMaterialization { status } } } } }
  }
}
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Iterator[tuple[DagsterServer, list[str]]]:
    """An instance holding an export run and a health-check run, served read-only."""
    root = tmp_path_factory.mktemp("ui-read-only")
    with local_deployment(root / "data"):
        start, end = default_range(2 / 24)
        generate(settings.sample_db_url(), start=start, end=end, sites=["ALIC1", "BALRD"])
        home = root / "dagster_home"
        with dagster_server(home, dict(os.environ)) as writable:
            runs = [_export(writable), writable.launch_run("cosmos_health_checks", {})]
            for run_id in runs:
                assert writable.wait_for_run(run_id, RUN_TIMEOUT)["status"] == "SUCCESS"
        with dagster_server(home, dict(os.environ), read_only=True) as server:
            yield server, runs


def _export(server: DagsterServer) -> str:
    """One table's live export, launched as the partitions page's Materialize does."""
    backfill = server.launch_backfill("cosmos_live_export_job_partition_set", [TABLE])
    done = server.wait_for_backfill(backfill, RUN_TIMEOUT)
    return done["runs"][0]["runId"]


def test_read_only_webserver_refuses_to_launch_a_run(recorded):
    server, runs = recorded
    with pytest.raises(GraphQLError, match="Unauthorized"):
        server.launch_run("cosmos_health_checks", {})
    listed = server.answer(RUN_IDS, {}, "runsOrError")["results"]
    assert sorted(run["runId"] for run in listed) == sorted(runs)  # nothing new was queued


def test_read_only_webserver_refuses_a_backfill_and_a_sensor_switch(recorded):
    server, _ = recorded
    with pytest.raises(GraphQLError, match="Unauthorized"):
        server.launch_backfill("cosmos_live_export_job_partition_set", [TABLE])
    sensors = server.answer(
        SENSORS_QUERY, {"selector": server.repository_selector}, "sensorsOrError"
    )
    sensor_id = sensors["results"][0]["sensorState"]["id"]
    with pytest.raises(GraphQLError, match="Unauthorized"):
        server.answer(STOP_SENSOR, {"id": sensor_id}, "stopSensor")


def test_read_only_webserver_still_shows_runs_assets_and_checks(recorded):
    server, runs = recorded
    listed = {
        run["runId"]: run["status"] for run in server.answer(RUN_IDS, {}, "runsOrError")["results"]
    }
    assert listed == {run_id: "SUCCESS" for run_id in runs}
    export_key = {"path": ["cosmos", "live_export"]}
    asset = server.answer(LIVE_EXPORT, {"key": export_key}, "assetOrError")
    assert [m["partition"] for m in asset["assetMaterializations"]] == [TABLE]
    node = server.answer(HEALTH_CHECKS, {"key": {"path": [f"health_{TABLE}"]}}, "assetNodeOrError")
    statuses = {
        c["name"]: (c["executionForLatestMaterialization"] or {}).get("status")
        for c in node["assetChecksOrError"]["checks"]
    }
    # The checks the health-check run evaluated show their results (the last-run check is
    # the run-status sensors', which are off here).
    evaluated = {name: status for name, status in statuses.items() if status is not None}
    assert f"{TABLE.lower()}_freshness" in evaluated, statuses
    assert set(evaluated.values()) <= {"SUCCEEDED", "FAILED", "WARNED"}, statuses
