"""A table behind reads failed on the partitions page, as its health does (issue 22, item 6).

The health job turned ``cosmos/health/<TABLE>`` red while the table's ``cosmos/live_export``
partition stayed "materialized" (the page showed "100% filled"): nothing had failed, nothing
had run. The verify sensor launches one verify-only run of the partition, which fails with the
verdict; the partition reads failed until the next export materializes it. Real instance, real
SQLite source, local state and objects, the new-rows sensor stopped with the ``dagster``
command as ``make sensor-stop`` does; the status is read as the UI reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import verify
from iotswarm_pipelines.export.asset_keys import LIVE_EXPORT_KEY
from iotswarm_pipelines.export.assets import cosmos_live_export, execute_live_export, run_tags
from iotswarm_pipelines.export.definitions import defs
from iotswarm_pipelines.export.partitions import table_partitions
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.verify_sensor import verify_behind_tables, verify_request
from iotswarm_pipelines.labels import TRIGGER_TAG
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, source
from iotswarm_tests.test_asset_checks import FRESHNESS, run_checks
from iotswarm_tests.test_ui_failed_runs_on_health import last_result, sense

ROOT = Path(__file__).resolve().parents[1]
TABLE = catalogue.SOILMET_30MIN
SITES = ("ALIC1", "BALRD")
NEW_ROWS_SENSOR = "cosmos_new_rows_level1_soilmet_30min"


@pytest.fixture
def resources(cosmos_url, local_objects, local_state):
    """SOILMET rows of two sites, 3 h and 2.5 h old: what the first export sends."""
    old = utc_now().replace(second=0, microsecond=0) - timedelta(hours=3)
    for site in SITES:
        insert_rows(
            cosmos_url, SOILMET, make_rows(SOILMET, site, [old, old + timedelta(hours=0.5)])
        )
    return {"cosmos": source(cosmos_url), "object_store": local_objects, "state": local_state}


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def rows_arrive(resources) -> None:
    """Rows up to 10 minutes ago: 2 h 20 min past the watermarks, beyond SOILMET's 1 h 30 min."""
    newest = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    for site in SITES:
        insert_rows(
            resources["cosmos"].url,
            SOILMET,
            make_rows(SOILMET, site, [newest - timedelta(minutes=30), newest]),
        )


def export(resources, instance, **config) -> dg.DagsterRun:
    run_config = {"ops": {cosmos_live_export.op.name: {"config": config}}}
    result = execute_live_export(TABLE, resources, run_config, instance, run_tags(TABLE))
    return instance.get_run_by_id(result.run_id)


def stop_new_rows_sensor(instance) -> None:
    """``make sensor-stop NAME=…``: the ``dagster`` command on the instance's home."""
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "sensor",
            "stop",
            NEW_ROWS_SENSOR,
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def tick(instance, resources, cursor: str | None):
    """One tick of the verify sensor as the daemon runs it (its run requests resolved)."""
    repo = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).get_repository_def()
    with dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repo) as context:
        return verify_behind_tables.evaluate_tick(context)


def soilmet(requests: list[dg.RunRequest]) -> list[dg.RunRequest]:
    """The requests for SOILMET (the other tables have no source table here: their freshness
    cannot be measured, which fails their checks and gets each a verify run too)."""
    return [request for request in requests if request.partition_key == SOILMET]


def launch(request: dg.RunRequest, instance, resources) -> dg.DagsterRun:
    """The requested run, as the daemon would launch it (in this process)."""
    job = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).resolve_job_def(
        "cosmos_live_export_job"
    )
    result = job.execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        tags=request.tags,
        instance=instance,
        raise_on_error=False,
    )
    return instance.get_run_by_id(result.run_id)


def partition_status(instance) -> str:
    """What the partitions page shows for SOILMET, from the status cache the UI reads."""
    value = get_and_update_asset_status_cache_value(instance, LIVE_EXPORT_KEY, table_partitions)
    assert value is not None
    if SOILMET in value.deserialize_failed_partition_subsets(table_partitions):
        return "failed"
    if SOILMET in value.deserialize_in_progress_partition_subsets(table_partitions):
        return "materializing"
    if SOILMET in value.deserialize_materialized_partition_subsets(table_partitions):
        return "materialized"
    return "missing"


def failure_message(instance, run: dg.DagsterRun) -> str:
    [record] = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    return record.event_log_entry.dagster_event.step_failure_data.error.message


def test_a_table_behind_with_its_sensor_stopped_reads_failed_until_its_next_export(
    resources, instance
):
    exported = export(resources, instance)
    assert exported.is_success
    run_checks(resources, instance)
    assert soilmet(tick(instance, resources, None).run_requests) == []  # fresh

    stop_new_rows_sensor(instance)
    rows_arrive(resources)
    assert not run_checks(resources, instance)[FRESHNESS].passed  # the graph: red
    assert partition_status(instance) == "materialized"  # what the page said before

    first = tick(instance, resources, None)
    [request] = soilmet(first.run_requests)
    assert request.partition_key == SOILMET
    assert request.tags[verify.VERIFY_TAG] == "true" and request.tags[TRIGGER_TAG] == "sensor"
    run = launch(request, instance, resources)
    assert run.is_failure
    message = failure_message(instance, run)
    assert "2 site(s) more than 1:30:00 behind the source" in message
    assert f"the sensor {NEW_ROWS_SENSOR} is stopped" in message
    assert partition_status(instance) == "failed"
    sense(instance, run)  # a verify run is not an export: <table>_last_run keeps the export's
    result = last_result(instance)
    assert result.passed and result.metadata["run_id"].value == exported.run_id

    run_checks(resources, instance)  # the next health tick: still behind, already failed
    second = tick(instance, resources, first.cursor)
    assert soilmet(second.run_requests) == []

    assert export(resources, instance).is_success  # the operator exports the table
    assert partition_status(instance) == "materialized"
    assert run_checks(resources, instance)[FRESHNESS].passed
    assert SOILMET not in json.loads(tick(instance, resources, second.cursor).cursor)


def test_a_verify_run_of_a_fresh_table_materializes_nothing(resources, instance):
    assert export(resources, instance).is_success
    before = instance.get_latest_materialization_event(LIVE_EXPORT_KEY)
    run = launch(verify_request(TABLE, 1), instance, resources)
    assert run.is_success and verify.is_verify_run(run.tags)
    assert instance.get_latest_materialization_event(LIVE_EXPORT_KEY) == before
    assert partition_status(instance) == "materialized"


def test_a_partition_an_export_already_failed_gets_no_verify_run(resources, instance):
    assert export(resources, instance).is_success
    assert export(resources, instance, batch_size=0).is_failure  # bad run config
    rows_arrive(resources)
    assert not run_checks(resources, instance)[FRESHNESS].passed
    assert partition_status(instance) == "failed"
    assert soilmet(tick(instance, resources, None).run_requests) == []
