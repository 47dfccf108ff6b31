"""The day x table reconciliation view, end to end: a backfill through the real webserver and
daemon, then the asset's partitions in headless Chromium (the README's screenshot).

Three days of sample rows for three sites are exported completely, a few objects of one day of
one table are deleted, and ``cosmos_reconcile_job`` is backfilled over the three days and five
tables: that one day and table must fail, every other partition must materialize.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import keys
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


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory) -> Iterator[tuple[DagsterServer, list[str], str]]:
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
        after, until = (keys.epoch_ms(t) for t in day_window(broken_day))
        of_day = [k for k in store.list_keys() if after < (keys.key_time_ms(k) or 0) <= until]
        folder = f"/LIVE_{catalogue.get_table(BROKEN_TABLE).key_name}/"
        of_day = [k for k in of_day if folder in k]
        for key in random.Random(3).sample(of_day, 4):
            store._path(key).unlink()
        with dagster_server(root / "dagster_home", dict(os.environ)) as server:
            yield server, [d.isoformat() for d in days], broken_day.isoformat()


def test_a_backfill_over_days_and_tables_shows_the_incomplete_day(reconciled, page):
    server, days, broken_day = reconciled
    names = [f"{day}|{table}" for day in days for table in catalogue.TABLE_NAMES]
    backfill_id = server.launch_backfill("cosmos_reconcile_job_partition_set", names)
    done = server.wait_for_backfill(backfill_id, BACKFILL_TIMEOUT)
    runs = {tags_of(run)["dagster/partition"]: run["status"] for run in done["runs"]}
    assert len(runs) == len(names)
    failed = {name for name, status in runs.items() if status != "SUCCESS"}
    assert failed == {f"{broken_day}|{BROKEN_TABLE}"}

    page.set_viewport_size({"width": 1400, "height": 1000})
    # The failed partition selected, so the detail pane shows it beside the day x table grid.
    page.goto(
        f"{server.url}/assets/cosmos/reconciliation?view=partitions"
        f"&partition={broken_day}|{BROKEN_TABLE}"
    )
    # The status filters count the partitions: the broken one failed, the other 14 materialized.
    expect(page.get_by_text(f"Materialized ({len(names) - 1})", exact=True)).to_be_visible()
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    expect(page.get_by_text("did not materialize this asset").first).to_be_visible()
    screenshot(page, "reconcile-partitions")
