"""The export assets run through Dagster's own machinery, with real resources."""

import json
from datetime import datetime, timedelta

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.assets import (
    TABLE_TAG,
    cosmos_history_export,
    cosmos_live_export,
    history_export_job,
    live_export_job,
)
from iotswarm_pipelines.export.definitions import defs
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.watermarks import aligned_batches
from iotswarm_tests.export_fixtures import (
    PRECIP,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    recent_rows,
    source,
    sqlite_url,
)


@pytest.fixture
def resources(tmp_path):
    url, recent, resources = recent_rows(tmp_path, sites=("ALIC1", "BALRD"))
    insert_rows(
        url, PRECIP, make_rows(PRECIP, "ALIC1", [recent + timedelta(minutes=i) for i in range(5)])
    )
    return resources


def materialization_metadata(result, asset) -> dict:
    [event] = result.asset_materializations_for_node(asset.op.name)
    return {name: value.value for name, value in event.metadata.items()}


def live_config(**config) -> dict:
    return {"ops": {cosmos_live_export.op.name: {"config": config}}}


def test_each_table_partition_exports_its_own_table(resources):
    soilmet = dg.materialize([cosmos_live_export], partition_key=SOILMET, resources=resources)
    precip = dg.materialize([cosmos_live_export], partition_key=PRECIP, resources=resources)
    assert soilmet.success and precip.success
    meta = materialization_metadata(soilmet, cosmos_live_export)
    assert (meta["rows_read"], meta["payloads"], meta["objects"], meta["sites_advanced"]) == (
        4,
        4,
        4,
        2,
    )
    assert meta["failed"] == 0 and meta["bytes"] > 0 and meta["lag_seconds"] == 0
    assert set(meta["watermarks"]) == {"ALIC1", "BALRD"}
    assert materialization_metadata(precip, cosmos_live_export)["rows_read"] == 5
    assert len(resources["object_store"].list_keys()) == 9


def test_run_config_sites_batch_size_and_dry_run(resources):
    result = dg.materialize(
        [cosmos_live_export],
        partition_key=SOILMET,
        resources=resources,
        run_config=live_config(sites=["BALRD"], batch_size=2, dry_run=True),
    )
    meta = materialization_metadata(result, cosmos_live_export)
    # BALRD's two rows, 30 minutes apart at some minute past: sent as the hour-long payloads
    # that are closed (aligned_batches), whatever the minute the test runs at.
    source = resources["cosmos"]
    newest = source.newest_times(catalogue.SOILMET_30MIN, ["BALRD"])
    rows = list(source.rows_after(catalogue.SOILMET_30MIN, "BALRD", None))
    batches = list(aligned_batches(rows, 2, timedelta(minutes=30), newest))
    assert (meta["rows_read"], meta["payloads"], meta["objects"], meta["dry_run"]) == (
        sum(map(len, batches)),
        len(batches),
        0,
        True,
    )
    assert resources["object_store"].list_keys() == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"since": "yesterday"}, "not an ISO 8601 date/time"),
        ({"since": "2024-06-02T00:00", "until": "2024-06-01T00:00"}, "must be later than since"),
        ({"until": "2024-06-01T00:00+01:00"}, "has a time zone"),
    ],
)
def test_bad_replay_windows_fail_with_a_clear_message(resources, config, message):
    run_config = live_config(**config)
    with pytest.raises(Exception, match=message):
        dg.materialize(
            [cosmos_live_export], partition_key=SOILMET, resources=resources, run_config=run_config
        )


def history_config(**config) -> dict:
    return {"ops": {cosmos_history_export.op.name: {"config": config}}}


def test_history_resends_the_picked_days_and_leaves_the_watermarks(tmp_path, cosmos_url):
    times = [datetime(2024, 6, 1) + timedelta(minutes=30 * i) for i in range(150)]
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    resources = {"cosmos": source(cosmos_url), "object_store": local_store(tmp_path)}
    result = dg.materialize(
        [cosmos_history_export],
        resources=resources,
        run_config=history_config(table=SOILMET, first_day="2024-06-01", last_day="2024-06-02"),
    )
    meta = materialization_metadata(result, cosmos_history_export)
    assert (meta["rows_read"], meta["objects"]) == (96, 96)
    assert meta["days"] == "2024-06-01 .. 2024-06-02"
    last = max(resources["object_store"].list_keys())
    assert (
        json.loads(resources["object_store"].get(last))["data"][0]["time"]
        == "2024-06-03T00:00:00.000000"
    )
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "table"),  # no default: the table and the days must be picked
        ({"table": SOILMET, "first_day": "2024-06-02", "last_day": "2024-06-01"}, "before"),
        ({"table": SOILMET, "first_day": "2013-01-01", "last_day": "2013-01-02"}, "first COSMOS"),
        ({"table": SOILMET, "first_day": "June", "last_day": "2024-06-01"}, "not a date"),
    ],
)
def test_history_needs_a_picked_table_and_a_sane_range(tmp_path, config, message):
    resources = {"cosmos": source(sqlite_url(tmp_path)), "object_store": local_store(tmp_path)}
    with pytest.raises(Exception, match=message):
        dg.materialize(
            [cosmos_history_export], resources=resources, run_config=history_config(**config)
        )


def test_jobs_tag_every_partition_with_its_table(resources):
    located = dg.Definitions.merge(defs, dg.Definitions(resources=resources))
    live = located.resolve_job_def(live_export_job.name)
    assert live.get_tags_for_partition_key(SOILMET, selected_asset_keys=None)[TABLE_TAG] == SOILMET
    assert located.resolve_job_def(history_export_job.name).partitions_def is None


def test_live_job_runs_carry_the_table_tag(resources):
    located = dg.Definitions.merge(defs, dg.Definitions(resources=resources))
    job = located.resolve_job_def(live_export_job.name)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(partition_key=SOILMET, instance=instance)
        assert result.success
        assert result.dagster_run.tags[TABLE_TAG] == SOILMET
        assert result.dagster_run.tags["dagster/partition"] == SOILMET


def test_demo_export_sends_every_table_of_the_sample_database():
    from iotswarm_pipelines import settings
    from iotswarm_pipelines.cosmos.sample import generate
    from iotswarm_pipelines.export.demo import run_demo_export
    from iotswarm_pipelines.resources import build_resources

    settings.data_dir().mkdir(parents=True)
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=3)
    written = generate(settings.sample_db_url(), start=start, end=end, sites=["ALIC1", "BALRD"])
    resources = build_resources()
    text = run_demo_export(resources)
    for table, rows in written.items():
        assert f"{table}: {rows} rows" in text
    assert local_store(settings.data_dir()).list_keys()
    # A second export finds nothing new.
    assert "0 rows" in run_demo_export(resources).splitlines()[0]


def test_the_demo_records_every_tables_health_after_its_exports(tmp_path, monkeypatch):
    """make demo ends with a health run, so the Catalog it points to shows verdicts, not a dash."""
    from iotswarm_pipelines import settings
    from iotswarm_pipelines.cosmos.sample import generate
    from iotswarm_pipelines.export.asset_keys import health_key
    from iotswarm_pipelines.export.demo import run_demo_export, run_demo_health
    from iotswarm_pipelines.resources import build_resources

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    settings.data_dir().mkdir(parents=True)
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    generate(settings.sample_db_url(), start=end - timedelta(hours=3), end=end, sites=["ALIC1"])
    resources = build_resources()
    run_demo_export(resources)
    assert run_demo_health(resources) == "health: 5 of 5 tables healthy (every check passed)"
    with dg.DagsterInstance.get() as instance:
        for table in catalogue.TABLES.values():
            event = instance.get_latest_materialization_event(health_key(table))
            assert event is not None, table.name
            assert event.asset_materialization.metadata["healthy"].value is True

    # A damaged state file: the demo names the table and fails rather than say healthy.
    (settings.data_dir() / "state" / f"{catalogue.SOILMET_30MIN.name}.pickle").write_bytes(b"x")
    with pytest.raises(RuntimeError, match=catalogue.SOILMET_30MIN.name):
        run_demo_health(resources)
