"""The UI is never green while something is wrong (issue 22, items 5, 6, 8 and 9), end to end.

A real webserver and daemon (``test_ui_e2e``'s server over two hours of sample rows, sensors
off), headless Chromium and GraphQL: a one-off ``live-cosmos`` run to another destination leaves
the deployment's health as it was; a backfill whose run failed turns its table's
``<table>_last_run`` red with the cause (the run-status sensors switched on); ``live-cosmos
reconcile`` turns its days' cells green without a backfill, on a partitions page of recent days;
the Catalog lists each health asset by its whole name, with the graph's verdict.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import expect

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import checks, cli, export_runs
from iotswarm_pipelines.export.asset_keys import HEALTH_TABLES, health_key
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests import test_ui_e2e as ui
from iotswarm_tests.dagster_server import LOCATION, DagsterServer, tags_of
from iotswarm_tests.services import wait_until
from iotswarm_tests.test_ui_e2e import RUN_TIMEOUT, screenshot

# The shared fixtures (pytest registers a fixture under the name it is bound to).
dagster, browser, page = ui.dagster, ui.browser, ui.page

FRESH_TABLE = "LEVEL1_NMDB_1HOUR"
BROKEN_TABLE = "COSMOS_STATUS_1HOUR"
SENSOR_TIMEOUT = 180
CATALOG_WIDTHS = (1400, 1280)  # the window, and a laptop's

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""


def start_sensor(server: DagsterServer, name: str) -> None:
    selector = {**server.repository_selector, "sensorName": name}
    result = server.answer(START_SENSOR, {"selector": selector}, "startSensor")
    assert result["sensorState"]["status"] == "RUNNING", name


def group_list(server: DagsterServer) -> str:
    """The export group's List tab: its assets in the Catalog's list."""
    return f"{server.url}/locations/{LOCATION}/asset-groups/{checks.GROUP}/list"


def server_data(server: DagsterServer) -> Path:
    """The deployment's data folder (each test has an IOTSWARM_DATA_DIR of its own)."""
    return server.home.parent / "data"


def livecosmos_config(server: DagsterServer, name: str, objects: str, state: str) -> str:
    """A config file over the server's sample database, writing to ``objects`` and ``state``."""
    sample = server_data(server) / "cosmos.sqlite"
    path = server.home.parent / f"{name}.cfg"
    path.write_text(
        f"url='sqlite:///{sample}'\nobject_dir='{objects}'\nstate_dir='{state}'\n"
        "bucket_prefix='fdri/cosmos_swarm'\n"
    )
    return str(path)


def test_a_one_off_run_elsewhere_leaves_the_deployments_health_as_it_was(dagster, page):
    ui.export_from_the_ui(dagster, page, FRESH_TABLE)
    before = ui.check_statuses(dagster, FRESH_TABLE)
    assert list(before.values()).count("SUCCEEDED") == 3  # the last run's check: sensors off

    # One site to a fresh state elsewhere: judged, the other sites would be hours behind.
    root = dagster.home.parent
    other = livecosmos_config(dagster, "one-off", str(root / "elsewhere"), str(root / "other"))
    args = [other, "--table", FRESH_TABLE, "--site", ui.SITES[0], "--dagster-home"]
    assert cli.run(["send-live-data", *args, str(dagster.home)]) == cli.EXIT_OK

    assert ui.check_statuses(dagster, FRESH_TABLE) == before
    runs = dagster.answer(ui.ALL_RUNS, {}, "runsOrError")["results"]
    [one_off] = [r for r in runs if tags_of(r).get("iotswarm/health_scope") == "one-off"]
    page.goto(f"{dagster.url}/runs/{one_off['runId']}")
    expect(page.get_by_text("a one-off run to objects").first).to_be_visible()
    screenshot(page, "one-off-run")


def test_a_failed_backfill_run_shows_on_its_tables_health(dagster, page):
    for sensor in export_runs.SENSORS.values():
        start_sensor(dagster, sensor.name)
    state = server_data(dagster) / "state"
    state.mkdir(parents=True, exist_ok=True)
    for copy in ("", ".backup"):  # both copies unreadable: the export stops with the cause
        (state / f"{BROKEN_TABLE}.pickle{copy}").write_bytes(b"not a pickle")

    backfill_id = dagster.launch_backfill("cosmos_live_export_job_partition_set", [BROKEN_TABLE])
    [run] = dagster.wait_for_backfill(backfill_id, RUN_TIMEOUT)["runs"]
    assert run["status"] == "FAILURE"
    check = export_runs.check_name(catalogue.STATUS_1HOUR)
    wait_until(
        lambda: ui.check_statuses(dagster, BROKEN_TABLE).get(check) == "FAILED",
        SENSOR_TIMEOUT,
        "the failure sensor's record",
        1,
    )

    page.goto(f"{dagster.url}/assets/health_{BROKEN_TABLE}?view=checks")
    page.get_by_text(check).first.click()
    expect(page.get_by_text("Failed").first).to_be_visible()
    expect(page.get_by_text(re.compile(rf"backfill {backfill_id}")).first).to_be_visible()
    expect(page.get_by_text("state").first).to_be_visible()
    screenshot(page, "failed-run-on-health")


def test_reconcile_from_the_command_line_fills_recent_cells(dagster, page):
    yesterday = (utc_now() - timedelta(days=1)).date().isoformat()
    data = server_data(dagster)
    own = livecosmos_config(dagster, "own", str(data / "objects"), str(data / "state"))
    args = ["reconcile", own, FRESH_TABLE, "--since", yesterday, "--until", yesterday]
    assert cli.run([*args, "--dagster-home", str(dagster.home)]) == cli.EXIT_OK

    page.goto(f"{dagster.url}/assets/cosmos/reconciliation?view=partitions")
    expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()
    expect(page.get_by_text("2013")).to_have_count(0)
    screenshot(page, "reconcile-from-the-command-line")


def test_the_catalog_shows_each_health_asset_with_the_graphs_verdict(dagster, page):
    stale = ui.STALE_TABLE  # two hours of rows never exported: behind its 15 minutes
    health_run = dagster.launch_run("cosmos_health_checks", {})
    assert dagster.wait_for_run(health_run, RUN_TIMEOUT)["status"] == "SUCCESS"
    freshness = f"{stale.lower()}_freshness"
    assert ui.check_statuses(dagster, stale)[freshness] == "FAILED"  # not reset by it

    # The group's List tab: each health asset materialized by that run, none "Never
    # materialized"; the status icon is red where a check failed, as on the graph.
    page.goto(group_list(dagster))
    for table in catalogue.TABLES.values():
        expect(page.get_by_text(health_key(table).path[-1], exact=True).first).to_be_visible()
    expect(page.get_by_text("Materialized", exact=True)).to_have_count(len(catalogue.TABLE_NAMES))
    expect(page.get_by_text("Never materialized")).to_have_count(0)
    screenshot(page, "catalog-health")

    page.goto(f"{dagster.url}/assets/health_{stale}")
    expect(page.get_by_text("behind the source").first).to_be_visible()
    expect(page.get_by_text(freshness).first).to_be_visible()
    screenshot(page, "health-verdict")


def test_the_catalog_lists_each_health_asset_by_its_whole_name(dagster, page):
    """The Catalog's list cut ``cosmos / health / LEVEL1_PRECIP_RAINE_1MIN`` in the middle in a
    window 1400 px wide, and every health asset's name in one 1280 px wide: each name must read
    whole, in the list of all assets and in the group's List tab. So must every other asset's
    (three kind icons cut ``cosmos / reconciliation`` at 1400 px)."""
    # Imported here, not at collection: the code location's resources take the data folder of
    # the moment they are built, which must be a test's own (conftest), never the checkout's.
    from iotswarm_pipelines.definitions import defs

    health = [" / ".join(health_key(table).path) for table in catalogue.TABLES.values()]
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    others = [" / ".join(key.path) for key in keys if key not in HEALTH_TABLES]
    for width in CATALOG_WIDTHS:
        page.set_viewport_size({"width": width, "height": 1200})  # tall: every row rendered
        for view, names in (
            (f"{dagster.url}/assets?view=list", health + others),
            (group_list(dagster), health),
        ):
            page.goto(view)
            for name in names:
                # The list keeps a copy of no height of the whole name, to measure it; the copy
                # on screen is the one cut in the middle ("cosmos / heal…SOILMET_30MIN").
                expect(page.get_by_text(name, exact=True).filter(visible=True)).to_have_count(1)
    screenshot(page, "catalog-health-names")
