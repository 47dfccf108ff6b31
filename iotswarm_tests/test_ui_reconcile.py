"""The day x table reconciliation view, end to end: a backfill through the real webserver and
daemon, then the asset's partitions in headless Chromium (the README's screenshot).

Three days of sample rows for three sites are exported completely, a few objects of one day of
one table are deleted, and ``cosmos_reconcile_job`` is backfilled over the three days and five
tables: that one day and table must fail, every other partition must materialize. The failed
cell's pane leads to its counts (issue 22 item 8): one click to "View all historical events",
one on the event, and the counts of a cell that was green before show in the pane itself.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from playwright.sync_api import Locator, Page, expect

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import keys
from iotswarm_pipelines.export.object_store import ObjectStore
from iotswarm_pipelines.export.pipeline import export_table, utc_now
from iotswarm_pipelines.export.reconciliation import day_window
from iotswarm_pipelines.resources import build_resources
from iotswarm_tests import test_ui_e2e as ui
from iotswarm_tests.dagster_server import DagsterServer, dagster_server, local_deployment, tags_of
from iotswarm_tests.test_ui_e2e import SITES, screenshot

# The shared Chromium fixtures (pytest registers a fixture under the name it is bound to).
browser, page = ui.browser, ui.page

BROKEN_TABLE = "LEVEL1_SOILMET_30MIN"
BACKFILL_TIMEOUT = 600


def objects_of(store: ObjectStore, day: date, table: str) -> list[str]:
    """The keys of one table's objects stamped within one UTC day."""
    after, until = (keys.epoch_ms(t) for t in day_window(day))
    folder = f"/LIVE_{catalogue.get_table(table).key_name}/"
    return [
        k for k in store.list_keys() if folder in k and after < (keys.key_time_ms(k) or 0) <= until
    ]


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory) -> Iterator[tuple[DagsterServer, list[str], str, ObjectStore]]:
    """Webserver + daemon over three whole past days, exported, with one day's gap made."""
    root = tmp_path_factory.mktemp("ui-reconcile")
    with local_deployment(root / "data"):
        today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
        days = [(today - timedelta(days=n)).date() for n in (3, 2, 1)]
        generate(settings.sample_db_url(), start=today - timedelta(days=3), end=today, sites=SITES)
        resources = build_resources()
        store, state = resources["object_store"].build(), resources["state"].build()
        source = CosmosSource(url=settings.sample_db_url())
        for table in catalogue.TABLES.values():  # every row of the sample: no fallback window
            export_table(table, source=source, store=store, state=state, fallback_hours=None)
        broken_day = days[1]
        for key in random.Random(3).sample(objects_of(store, broken_day, BROKEN_TABLE), 4):
            store._path(key).unlink()
        with dagster_server(root / "dagster_home", dict(os.environ)) as server:
            yield server, [d.isoformat() for d in days], broken_day.isoformat(), store


@pytest.fixture(scope="module")
def backfilled(reconciled) -> tuple[DagsterServer, list[str], str, ObjectStore, dict[str, str]]:
    """The three days x five tables backfilled: each partition's run status."""
    server, days, broken_day, store = reconciled
    names = [f"{day}|{table}" for day in days for table in catalogue.TABLE_NAMES]
    done = reconcile(server, names)
    return (
        server,
        days,
        broken_day,
        store,
        {tags_of(r)["dagster/partition"]: r["status"] for r in done},
    )


def reconcile(server: DagsterServer, names: list[str]) -> list[dict]:
    """Backfill these partitions of ``cosmos_reconcile_job``; their runs, finished."""
    backfill_id = server.launch_backfill("cosmos_reconcile_job_partition_set", names)
    return server.wait_for_backfill(backfill_id, BACKFILL_TIMEOUT)["runs"]


def open_pane(page: Page, server: DagsterServer, name: str) -> None:
    """The partitions view with one cell selected: its pane beside the day x table grid."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{server.url}/assets/cosmos/reconciliation?view=partitions&partition={name}")


def metadata_row(page: Page, label: str) -> Locator:
    """The row of one metadata label, in the pane or a dialog (the last one shown)."""
    return page.locator("tr").filter(has=page.get_by_role("cell", name=label, exact=True)).last


def metadata_value(page: Page, label: str) -> Locator:
    return metadata_row(page, label).get_by_role("cell").nth(1)


def test_a_backfill_over_days_and_tables_shows_the_incomplete_day(backfilled, page):
    server, days, broken_day, _store, runs = backfilled
    assert len(runs) == len(days) * len(catalogue.TABLE_NAMES)
    failed = {name for name, status in runs.items() if status != "SUCCESS"}
    assert failed == {f"{broken_day}|{BROKEN_TABLE}"}

    # The failed partition selected, so the detail pane shows it beside the day x table grid.
    open_pane(page, server, f"{broken_day}|{BROKEN_TABLE}")
    # The status filters count the partitions: the broken one failed, the other 14 materialized.
    expect(page.get_by_text(f"Materialized ({len(runs) - 1})", exact=True)).to_be_visible()
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    expect(page.get_by_text("did not materialize this asset").first).to_be_visible()
    screenshot(page, "reconcile-partitions")


def test_a_failed_cell_s_pane_leads_to_its_counts(backfilled, page):
    server, _days, broken_day, _store, _runs = backfilled
    open_pane(page, server, f"{broken_day}|{BROKEN_TABLE}")
    expect(page.get_by_text("did not materialize this asset").first).to_be_visible()
    # One click: the cell's history lists the failed run's observation; one more opens it.
    page.get_by_role("button", name="View all historical events (1)").click()
    history = page.get_by_role("dialog").filter(has_text="Historical events for")
    history.get_by_text("Observation", exact=True).click()
    expect(history.get_by_text(re.compile(r"4 missing, 0 duplicated, 0 orphaned"))).to_be_visible()
    expect(history.get_by_text(re.compile(r"INCOMPLETE; first missing \w+ \d\d:"))).to_be_visible()
    for label, value in (("missing", "4"), ("duplicated", "0"), ("orphaned", "0")):
        expect(metadata_value(page, label)).to_have_text(value)
    screenshot(page, "reconcile-failed-cell")
    history.get_by_role("button", name="OK").click()
    # The failure banner's "View logs": the run's own line says the same.
    page.get_by_role("button", name="View logs").click()
    logs = page.get_by_role("dialog").filter(has_text="View Run")
    expect(
        logs.get_by_text(re.compile(r"4 missing, 0 duplicated, 0 orphaned")).first
    ).to_be_visible()


def test_a_cell_that_fails_after_it_was_green_shows_the_counts_in_its_pane(backfilled, page):
    server, days, _broken_day, store, _runs = backfilled
    name = f"{days[0]}|{BROKEN_TABLE}"
    gone = random.Random(5).sample(objects_of(store, date.fromisoformat(days[0]), BROKEN_TABLE), 2)
    kept = {key: store._path(key).read_bytes() for key in gone}
    for key in gone:
        store._path(key).unlink()
    [run] = reconcile(server, [name])
    assert run["status"] == "FAILURE"

    # The pane lists the green run's metadata with the failed run's observation over it.
    open_pane(page, server, name)
    expect(page.get_by_text("did not materialize this asset").first).to_be_visible()
    expect(metadata_value(page, "missing")).to_have_text("2")
    expect(metadata_row(page, "missing")).to_contain_text("Observed in run")
    expect(page.get_by_text("Failed (2)", exact=True)).to_be_visible()
    screenshot(page, "reconcile-failed-after-green")

    # Restored and reconciled again: green, its pane without the failure.
    for key, body in kept.items():
        store._path(key).write_bytes(body)
    [run] = reconcile(server, [name])
    assert run["status"] == "SUCCESS"
    open_pane(page, server, name)
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    expect(metadata_value(page, "missing")).to_have_text("0")
    expect(page.get_by_text("did not materialize this asset")).to_have_count(0)
