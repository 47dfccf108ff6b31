"""A failed export run (a backfill's too) shows on its table's health (issue 22, item 9).

The runs list reads a backfill with failed runs as a completed backfill; the operator looks at
the table's health asset. A run-status sensor records each finished live export run of a table
as the result of the table's ``<table>_last_run`` check: failed, naming the run and its
one-line cause, until a later run of the table succeeds. Real instance, real SQLite source.
"""

from __future__ import annotations

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import export_runs, scope
from iotswarm_pipelines.export.assets import cosmos_live_export, execute_live_export, run_tags
from iotswarm_tests import test_asset_checks
from iotswarm_tests.export_fixtures import SOILMET

setup = test_asset_checks.setup  # two sites of SOILMET, six recent rows each
CHECK = export_runs.check_key(catalogue.SOILMET_30MIN)


def export(resources, instance, tags=None, **config) -> dg.DagsterRun:
    run_config = {"ops": {cosmos_live_export.op.name: {"config": config}}}
    result = execute_live_export(
        catalogue.SOILMET_30MIN,
        resources,
        run_config,
        instance,
        {**run_tags(catalogue.SOILMET_30MIN), **(tags or {})},
    )
    return instance.get_run_by_id(result.run_id)


def sense(instance, run: dg.DagsterRun) -> None:
    """What the daemon does when the run finishes: the sensor, for that run's end event."""
    status = dg.DagsterRunStatus.FAILURE if run.is_failure else dg.DagsterRunStatus.SUCCESS
    sensor = export_runs.SENSORS[status]
    [event] = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType(status_event(status))
    ).records
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=event.event_log_entry.dagster_event,
    )
    if run.is_failure:
        context = context.for_run_failure()
    sensor(context)


def status_event(status: dg.DagsterRunStatus) -> str:
    return "PIPELINE_FAILURE" if status is dg.DagsterRunStatus.FAILURE else "PIPELINE_SUCCESS"


def last_result(instance):
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])
    record = latest.get(CHECK)
    return record and record.event.dagster_event.asset_check_evaluation_data


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_a_failed_export_run_fails_its_tables_last_run_check_with_the_cause(setup, instance):
    resources, _ = setup
    failed = export(resources, instance, batch_size=0)  # bad run config: the run fails
    assert failed.is_failure
    sense(instance, failed)

    result = last_result(instance)
    assert result is not None and not result.passed
    assert result.asset_key == dg.AssetKey(f"health_{SOILMET}")
    assert result.metadata["run_id"].value == failed.run_id
    assert "batch_size must be 1 or more" in result.metadata["cause"].value
    assert failed.run_id[:8] in result.description

    succeeded = export(resources, instance)
    sense(instance, succeeded)
    assert last_result(instance).passed


def test_a_backfill_run_that_failed_names_its_backfill(setup, instance):
    resources, _ = setup
    failed = export(resources, instance, {"dagster/backfill": "abcdefgh"}, batch_size=0)
    sense(instance, failed)
    result = last_result(instance)
    assert not result.passed and result.metadata["backfill"].value == "abcdefgh"


def test_a_one_off_runs_failure_is_not_the_deployments(setup, instance):
    resources, _ = setup
    one_off = {scope.SCOPE_TAG: scope.ONE_OFF, scope.DESTINATION_TAG: "objects elsewhere"}
    sense(instance, export(resources, instance, one_off, batch_size=0))
    assert last_result(instance) is None


def test_the_check_is_defined_on_each_tables_health_asset():
    from iotswarm_pipelines.definitions import defs

    specs = {key for key in defs.resolve_asset_graph().asset_check_keys}
    assert CHECK in specs
