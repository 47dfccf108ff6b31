"""``live-cosmos reconcile`` records its days in the UI's instance (issue 22, item 8).

The command's days land in the same ``cosmos/reconciliation`` partitions as a backfill's: a
complete day materialized (green), an incomplete one a failed run with its counts (red), with
no backfill; and the partitions open on recent days, not on every day since 2013. Real
instance, real SQLite source and object folder.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import cli, keys
from iotswarm_pipelines.export.partitions import RECONCILE_DAYS, daily_table_partitions
from iotswarm_pipelines.export.pipeline import export_table, utc_now
from iotswarm_pipelines.export.reconciliation import day_window
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, source, state_store

RECONCILIATION = dg.AssetKey(["cosmos", "reconciliation"])


@pytest.fixture
def two_days(tmp_path, local_objects, cosmos_url) -> tuple[Path, Path, list[date]]:
    """The two days before today of ALIC1 SOILMET exported; the second day's 4 objects gone."""
    today = datetime.combine(utc_now().date(), datetime.min.time())
    days = [(today - timedelta(days=n)).date() for n in (2, 1)]
    times = [today - timedelta(days=2) + timedelta(minutes=30 * i) for i in range(1, 97)]
    for table in catalogue.TABLE_NAMES:
        insert_rows(cosmos_url, table, [])
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        state=state_store(tmp_path),
        fallback_hours=None,
    )
    after, until = (keys.epoch_ms(t) for t in day_window(days[1]))
    for key in [
        k for k in local_objects.list_keys() if after < (keys.key_time_ms(k) or 0) <= until
    ][:4]:
        local_objects._path(key).unlink()
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{cosmos_url}'\n"
        f"object_dir='{tmp_path / 'objects'}'\nstate_dir='{tmp_path / 'state'}'\n"
        "bucket_prefix='fdri/cosmos_swarm'\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    return config, home, days


def partition(day: date) -> str:
    return str(dg.MultiPartitionKey({"date": day.isoformat(), "table": SOILMET}))


def reconcile(config: Path, home: Path, *args: str) -> int:
    return cli.run(["reconcile", str(config), SOILMET, *args, "--dagster-home", str(home)])


def test_the_commands_days_turn_their_cells_green_and_red(two_days):
    config, home, (complete, incomplete) = two_days
    span = ("--since", complete.isoformat(), "--until", incomplete.isoformat())
    assert reconcile(config, home, *span) == cli.EXIT_FAILED

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(RECONCILIATION) == {partition(complete)}
        [failed] = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/partition": partition(incomplete)})
        )
        assert failed.status is dg.DagsterRunStatus.FAILURE
        assert failed.tags["iotswarm/trigger"] == "cli"
        [observed] = instance.fetch_observations(
            dg.AssetRecordsFilter(RECONCILIATION, asset_partitions=[partition(incomplete)]), 1
        ).records
        counts = observed.asset_observation.metadata
        assert (counts["missing"].value, counts["duplicated"].value) == (4, 0)
        assert "orphaned" in counts
        # The line the cell's history leads with, as a backfill's run records it.
        line = observed.asset_observation.description
        assert "4 missing, 0 duplicated, 0 orphaned" in line and "first missing ALIC1 " in line

    assert reconcile(config, home, *span, "--heal") == cli.EXIT_OK
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(RECONCILIATION) == {
            partition(complete),
            partition(incomplete),
        }


def test_the_partitions_open_on_recent_days():
    dates = daily_table_partitions.get_partitions_def_for_dimension("date")
    first = date.fromisoformat(dates.get_first_partition_key())
    assert first >= utc_now().date() - timedelta(days=RECONCILE_DAYS)
    assert len(daily_table_partitions.get_partition_keys()) <= (RECONCILE_DAYS + 1) * 5
