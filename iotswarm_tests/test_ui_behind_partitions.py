"""The partitions page says a table is behind, as its health does (issue 22, item 6), end to end.

A real webserver and daemon (``test_ui_e2e``'s server over two hours of sample rows, every
new-rows sensor stopped), headless Chromium and GraphQL. One table is exported up to an hour ago
from the command line, as the deployment: its partition reads materialized while the health
job finds it behind. With the verify sensor on, the daemon launches a verify-only run of it
that fails naming the stopped sensor, and the asset's Partitions tab shows the table failed,
with the failed run on its pane.
"""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from iotswarm_pipelines.export import cli, scope, verify
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.verify_sensor import SENSOR_NAME
from iotswarm_tests import test_ui_e2e as ui
from iotswarm_tests.dagster_server import FINISHED, DagsterServer, tags_of
from iotswarm_tests.services import wait_until
from iotswarm_tests.test_ui_e2e import RUN_TIMEOUT, screenshot
from iotswarm_tests.test_ui_verdicts_e2e import livecosmos_config, server_data, start_sensor

dagster, browser, page = ui.dagster, ui.browser, ui.page

BEHIND = ui.STALE_TABLE  # a 1-minute table: behind once its watermark trails by 15 minutes
SENSOR_TIMEOUT = 240

PARTITIONS = """
query Partitions($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
    ... on Error { message }
  }
}
"""

VERIFY_RUNS = """
query VerifyRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on Error { message }
  }
}
"""


def partition_statuses(server: DagsterServer) -> dict[str, list[str]]:
    key = {"path": ["cosmos", "live_export"]}
    node = server.answer(PARTITIONS, {"key": key}, "assetNodeOrError")
    return node["assetPartitionStatuses"]


def verify_runs(server: DagsterServer) -> list[dict]:
    tags = [{"key": verify.VERIFY_TAG, "value": "true"}]
    return server.answer(VERIFY_RUNS, {"filter": {"tags": tags}}, "runsOrError")["results"]


def ui_runs(server: DagsterServer) -> list[dict]:
    return server.answer(ui.ALL_RUNS, {}, "runsOrError")["results"]


def verify_run_of(server: DagsterServer, table: str) -> dict | None:
    runs = [run for run in verify_runs(server) if tags_of(run).get("iotswarm/table") == table]
    return runs[0] if runs else None


def test_a_table_behind_reads_failed_on_the_partitions_page(dagster, page, monkeypatch):
    data = server_data(dagster)
    monkeypatch.setenv("IOTSWARM_DATA_DIR", str(data))  # the command runs as the deployment
    own = livecosmos_config(dagster, "own", str(data / "objects"), str(data / "state"))
    an_hour_ago = (utc_now() - timedelta(hours=1)).replace(microsecond=0).isoformat()
    args = [own, BEHIND, "--until", an_hour_ago]
    assert cli.run([*args, "--dagster-home", str(dagster.home)]) == cli.EXIT_OK
    [export] = [run for run in ui_runs(dagster) if tags_of(run).get("iotswarm/trigger") == "cli"]
    assert tags_of(export)[scope.SCOPE_TAG] == scope.DEPLOYMENT
    health_run = dagster.launch_run("cosmos_health_checks", {})
    assert dagster.wait_for_run(health_run, RUN_TIMEOUT)["status"] == "SUCCESS"
    assert ui.check_statuses(dagster, BEHIND)[f"{BEHIND.lower()}_freshness"] == "FAILED"
    assert BEHIND in partition_statuses(dagster)["materializedPartitions"]  # the old page

    start_sensor(dagster, SENSOR_NAME)
    wait_until(
        lambda: (run := verify_run_of(dagster, BEHIND)) is not None and run["status"] in FINISHED,
        SENSOR_TIMEOUT,
        "the verify run of the table behind",
        1,
    )
    run = verify_run_of(dagster, BEHIND)
    assert run is not None and run["status"] == "FAILURE"
    # The other tables never exported are behind too: their verify runs, requested in the same
    # tick, end before the page is read, so its counts hold still.
    wait_until(
        lambda: all(other["status"] in FINISHED for other in verify_runs(dagster)),
        SENSOR_TIMEOUT,
        "the other verify runs",
        1,
    )
    statuses = partition_statuses(dagster)
    assert BEHIND in statuses["failedPartitions"]
    assert BEHIND not in statuses["materializedPartitions"]

    page.goto(f"{dagster.url}/assets/cosmos/live_export?view=partitions")
    expect(page.get_by_text(f"Failed ({len(statuses['failedPartitions'])})")).to_be_visible()
    page.get_by_text(BEHIND, exact=True).first.click()
    expect(page.get_by_text(f"Run {run['runId'][:8]} failed").first).to_be_visible()
    screenshot(page, "behind-partition-failed")

    page.goto(f"{dagster.url}/runs/{run['runId']}")
    expect(page.get_by_text(f"cosmos_new_rows_{BEHIND.lower()} is stopped").first).to_be_visible()
