"""The UI end to end: a real webserver and daemon, driven by headless Chromium and by GraphQL.

Screenshots go to ``test-artifacts/ui/`` (with each test's last page and the webserver's and
daemon's logs, for a failed run); with ``IOTSWARM_UPDATE_SCREENSHOTS=1`` the ones the README
shows are also copied to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.sample.generator import default_range
from iotswarm_pipelines.export import assets as export_assets
from iotswarm_pipelines.export.assets import TABLE_TAG
from iotswarm_pipelines.swarm.demo import run_demo_swarm
from iotswarm_pipelines.swarm.launch import multiprocess_config
from iotswarm_tests.dagster_server import (
    LOCATION,
    PROJECT,
    DagsterServer,
    dagster_server,
    local_deployment,
    tags_of,
)
from iotswarm_tests.services import unavailable

CHROMIUM = Path(os.environ.get("IOTSWARM_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT / "test-artifacts" / "ui"
DOCS_SCREENSHOTS = PROJECT / "docs" / "screenshots"
SITES = ["ALIC1", "BALRD", "BICKL"]
UI_TABLE = "LEVEL1_NMDB_1HOUR"
STALE_TABLE = "LEVEL1_PRECIP_1MIN"  # two hours of rows never exported: behind its 15 minutes
OTHER_TABLE = "LEVEL1_PRECIP_RAINE_1MIN"
BACKFILL_TABLES = ["LEVEL1_SOILMET_30MIN", "COSMOS_STATUS_1HOUR"]
RUN_TIMEOUT = 180
UI_TIMEOUT_MS = 60_000  # a bound for the UI to load or update, not a pause
expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def dagster(tmp_path_factory) -> Iterator[DagsterServer]:
    """Webserver + daemon over two hours of sample rows for three sites (every table).

    The rows are newer than the export's 3-hour fallback, so a run exports real payloads; the
    sensors, which would export them too, are switched off before the daemon starts.
    """
    root = tmp_path_factory.mktemp("ui-e2e")
    with local_deployment(root / "data"):
        start, end = default_range(2 / 24)
        generate(settings.sample_db_url(), start=start, end=end, sites=SITES)
        home = root / "dagster_home"
        try:
            with dagster_server(home, dict(os.environ)) as server:
                yield server
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for log in home.glob("*.log"):  # webserver and daemon output, for a failed CI run
                shutil.copy(log, ARTIFACTS / log.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}; run `make services` (Debian package chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request) -> Iterator[Page]:
    """A fresh browser tab; what it showed last is kept, which explains a failed wait."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="UTC")
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"last-page-{request.node.name}.png")
    context.close()


def screenshot(page: Page, name: str) -> None:
    """Save a test artifact; refresh the README's copy when asked to."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path)
    if os.environ.get("IOTSWARM_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / path.name)


def launch_one_partition_from_the_ui(page: Page, table: str) -> str:
    """Materialize… -> pick one table in the partition selector -> launch; returns the run ID."""
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    picker = page.get_by_role("dialog").filter(has=page.get_by_placeholder("Filter partitions"))
    picker.get_by_text(table, exact=True).first.click()
    page.keyboard.press("Escape")  # closes the picker, keeps the launch dialog
    dialog.get_by_role("button", name="Launch 1 run").click()
    view = page.get_by_role("link", name="View", exact=True)  # in the "launched" toast
    expect(view).to_have_attribute("href", re.compile(r"^/runs/"))
    return view.get_attribute("href").removeprefix("/runs/")


def test_ui_materializes_one_table_partition_and_shows_the_run(dagster, page):
    page.goto(f"{dagster.url}/assets/cosmos/live_export?view=partitions")
    for table in catalogue.TABLE_NAMES:
        expect(page.get_by_text(table, exact=True).first).to_be_visible()

    run_id = launch_one_partition_from_the_ui(page, UI_TABLE)
    run = dagster.wait_for_run(run_id, RUN_TIMEOUT)
    assert run["status"] == "SUCCESS"
    assert tags_of(run)["dagster/partition"] == UI_TABLE
    assert tags_of(run)[TABLE_TAG] == UI_TABLE  # added by the step: the graph's job has none

    page.goto(f"{dagster.url}/runs/{run_id}")
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
    # The run also evaluated the health checks; show the export step's own events.
    page.get_by_placeholder("Filter…").or_(page.get_by_placeholder("Filter...")).first.fill(
        "step:cosmos__live_export"
    )
    page.keyboard.press("Enter")
    expect(page.get_by_text("rows_read").first).to_be_visible()
    screenshot(page, "export-run")

    page.goto(f"{dagster.url}/locations/{LOCATION}/asset-groups/{export_assets.GROUP}/lineage")
    expect(page.get_by_text("live_export").first).to_be_visible()
    expect(page.get_by_text(f"{len(catalogue.TABLE_NAMES)} partitions").first).to_be_visible()
    screenshot(page, "asset-graph")


def test_swarm_launchpad_and_a_swarm_report(dagster, page, mqtt_broker):
    page.goto(f"{dagster.url}/locations/{LOCATION}/jobs/swarm_job/playground")
    expect(page.get_by_role("button", name="Launch Run")).to_be_visible()
    expect(page.get_by_text("plan_swarm").first).to_be_visible()
    screenshot(page, "swarm-launchpad")

    name = f"ui-e2e-{uuid.uuid4().hex[:8]}"
    swarm = {
        "mode": "loop",
        "sites": SITES,
        "per_site": 2,
        "shards": 2,
        "max_cycles": 5,
        "sleep_time": 0.5,
        "verify": True,
        "swarm_name": name,
        "mqtt_prefix": name,
    }
    run_id = dagster.launch_run(
        "swarm_job",
        {
            "ops": {"plan_swarm": {"config": swarm}},
            "execution": {"config": {"multiprocess": multiprocess_config(2)}},
        },
    )
    assert dagster.wait_for_run(run_id, RUN_TIMEOUT)["status"] == "SUCCESS"

    page.set_viewport_size({"width": 1400, "height": 1700})
    page.goto(f"{dagster.url}/assets/swarm/report?view=events")
    expect(page.get_by_text(f"Swarm report: {name}")).to_be_visible()
    expect(page.get_by_text(f"Materialized in run {run_id[:8]}")).to_be_visible()
    screenshot(page, "swarm-report")


def test_graphql_backfill_of_two_tables_runs_each_once(dagster):
    backfill_id = dagster.launch_backfill("cosmos_live_export_job_partition_set", BACKFILL_TABLES)
    done = dagster.wait_for_backfill(backfill_id, RUN_TIMEOUT)
    assert done["status"] == "COMPLETED_SUCCESS"
    runs = done["runs"]
    assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"]
    assert sorted(tags_of(run)[TABLE_TAG] for run in runs) == sorted(BACKFILL_TABLES)
    assert {tags_of(run)["dagster/backfill"] for run in runs} == {backfill_id}


ALL_RUNS = """
{ runsOrError {
    ... on Runs { results { runId jobName tags { key value } } } ... on Error { message } } }
"""


def test_no_sensor_launched_a_run_beside_the_tests(dagster):
    """The sample rows are pending for every sensor: they must have stayed off all along."""
    runs = dagster.answer(ALL_RUNS, {}, "runsOrError")["results"]
    assert not [run["runId"] for run in runs if "dagster/sensor_name" in tags_of(run)]


CHECKS = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks { checks { name executionForLatestMaterialization { status runId } } }
      }
    }
    ... on Error { message }
  }
}
"""


def check_statuses(dagster: DagsterServer, table: str) -> dict[str, str | None]:
    """Each health check of ``table`` and the status the asset graph shows for it."""
    key = {"path": [f"health_{table}"]}
    node = dagster.answer(CHECKS, {"key": key}, "assetNodeOrError")
    return {
        check["name"]: (check["executionForLatestMaterialization"] or {}).get("status")
        for check in node["assetChecksOrError"]["checks"]
    }


def health_job_statuses(dagster: DagsterServer, table: str) -> dict[str, str | None]:
    """The statuses of the checks the health job and each export evaluate (not the last run's,
    which the run-status sensors record)."""
    statuses = check_statuses(dagster, table)
    return {name: status for name, status in statuses.items() if not name.endswith("_last_run")}


def export_from_the_ui(dagster: DagsterServer, page: Page, table: str) -> str:
    page.goto(f"{dagster.url}/assets/cosmos/live_export?view=partitions")
    run_id = launch_one_partition_from_the_ui(page, table)
    assert dagster.wait_for_run(run_id, RUN_TIMEOUT)["status"] == "SUCCESS"
    return run_id


def test_a_stale_table_shows_failed_on_its_health_asset_until_it_is_exported(dagster, page):
    freshness = f"{STALE_TABLE.lower()}_freshness"
    health_run = dagster.launch_run("cosmos_health_checks", {})
    assert dagster.wait_for_run(health_run, RUN_TIMEOUT)["status"] == "SUCCESS"
    assert check_statuses(dagster, STALE_TABLE)[freshness] == "FAILED"

    export_from_the_ui(dagster, page, OTHER_TABLE)  # another table's export hides nothing
    assert check_statuses(dagster, STALE_TABLE)[freshness] == "FAILED"
    assert set(health_job_statuses(dagster, OTHER_TABLE).values()) == {"SUCCEEDED"}

    page.goto(f"{dagster.url}/locations/{LOCATION}/asset-groups/{export_assets.GROUP}/lineage")
    expect(page.get_by_text(f"health_{STALE_TABLE}", exact=True).first).to_be_visible()
    # Loaded: three passed of four (the last run's check waits for the sensors, off here).
    expect(page.get_by_text(re.compile(r"3 / 4 Passed")).first).to_be_visible()
    screenshot(page, "health")
    page.goto(f"{dagster.url}/assets/health_{STALE_TABLE}?view=checks")
    page.get_by_text(freshness).first.click()
    expect(page.get_by_text("Failed").first).to_be_visible()
    expect(page.get_by_text("behind the source").first).to_be_visible()
    screenshot(page, "health-checks")

    export_from_the_ui(dagster, page, STALE_TABLE)  # the fix: the run evaluates its own checks
    assert set(health_job_statuses(dagster, STALE_TABLE).values()) == {"SUCCEEDED"}


def test_materialize_all_of_the_export_group_cannot_resend_history(dagster, page):
    page.goto(f"{dagster.url}/locations/{LOCATION}/asset-groups/{export_assets.GROUP}/lineage")
    # The group's one materializable asset is the live export: its button is "Materialize (1)".
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text("live_export").first).to_be_visible()
    for history in ("history_export", "2013", "24,050"):
        expect(dialog.get_by_text(history)).to_have_count(0)
    screenshot(page, "materialize-all")
    page.keyboard.press("Escape")

    # History is its own group, unpartitioned: no wall of "missing" days, and a launch needs a
    # table and a range of days picked in the launchpad.
    page.goto(f"{dagster.url}/assets/cosmos/history_export")
    expect(page.get_by_text(export_assets.HISTORY_GROUP).first).to_be_visible()
    expect(page.get_by_text("missing", exact=False)).to_have_count(0)
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize")).first.click()
    launchpad = page.get_by_role("dialog")
    expect(launchpad.get_by_text("first_day").first).to_be_visible()
    screenshot(page, "history-launchpad")


def test_the_demos_swarm_is_visible_in_the_ui(dagster, page, mqtt_broker, monkeypatch):
    """make demo's swarm runs through iot-swarm, whose runs land in DAGSTER_HOME."""
    monkeypatch.setenv("DAGSTER_HOME", str(dagster.home))
    sample = dagster.home.parent / "data" / "cosmos.sqlite"  # the server's (see `dagster`)
    run_demo_swarm(f"sqlite:///{sample}", *mqtt_broker)
    runs = dagster.answer(ALL_RUNS, {}, "runsOrError")["results"]
    demo = [run for run in runs if tags_of(run).get("iotswarm/swarm") == "demo"]
    assert [run["jobName"] for run in demo] == ["swarm_job"]
    assert tags_of(demo[0])["iotswarm/trigger"] == "cli"

    page.goto(f"{dagster.url}/assets/swarm/report?view=events")
    expect(page.get_by_text("Swarm report: demo")).to_be_visible()
    page.goto(f"{dagster.url}/runs")
    expect(page.get_by_text("swarm_job").first).to_be_visible()
