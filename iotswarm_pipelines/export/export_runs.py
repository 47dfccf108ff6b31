"""Each table's last export run, as a check on its health asset: a failed run is never green.

A backfill over tables whose runs failed completes, and the runs list reads it as done; the
graph's health assets did not change. Two run-status sensors record each finished live export
run of a table as the result of ``<table>_last_run`` on ``cosmos/health/<TABLE>``:
failed, naming the run (a link), its backfill and its one-line cause, until a later run of that
table succeeds. One-off runs to another destination (``scope``) are not the deployment's.
Separate from any notification sensor: this one only records, where the operator looks.
"""

from collections.abc import Iterable
from typing import Any

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.export import checks, health, scope, verify
from iotswarm_pipelines.export.asset_keys import health_key
from iotswarm_pipelines.export.assets import TABLE_TAG

PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
RUNS_SCANNED = 20


def check_name(table: catalogue.Table) -> str:
    return f"{table.name.lower()}_last_run"


def check_key(table: catalogue.Table) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(health_key(table), check_name(table))


CHECK_SPECS = [
    dg.AssetCheckSpec(
        name=check_name(table),
        asset=health_key(table),
        description=f"The newest live export run of {table.name} (a backfill's too) succeeded; "
        "when it failed, the run, its backfill and its cause.",
    )
    for table in catalogue.TABLES.values()
]


def export_table(run: dg.DagsterRun) -> catalogue.Table | None:
    """The table a finished run exported for the deployment, or None (not a live export run
    of one table: a reconciliation day, a history re-send, a one-off to another destination, a
    verify-only run, which exports nothing and whose failure the table's freshness already says).

    The run's table tag is a name: it is looked up here, where the run is read."""
    name = run.tags.get(TABLE_TAG)
    if (
        name is None
        or run.tags.get(PARTITION_TAG) != name
        or scope.is_one_off(run.tags)
        or verify.is_verify_run(run.tags)
    ):
        return None
    return catalogue.get_table(name)


def step_failure_cause(events: Iterable[dg.DagsterEvent]) -> str | None:
    """The first failed step's own error in one line (not Dagster's wrapping of it)."""
    for event in events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "DagsterExecution" in (error.cls_name or "")
            ):
                error = error.cause
            if error is not None:
                first = first_line(error.message)
                return first.removeprefix(f"{error.cls_name}: ").split(f".{error.cls_name}: ")[-1]
    return None


def outcome(table: catalogue.Table, run: dg.DagsterRun, cause: str | None) -> health.Outcome:
    """Passed for a successful run; failed, with the run and ``cause``, otherwise."""
    metadata: dict[str, Any] = {
        "run_id": run.run_id,
        "run": dg.MetadataValue.dagster_run(run.run_id),
        "status": run.status.value,
    }
    backfill = run.tags.get(BACKFILL_TAG)
    if backfill:
        metadata["backfill"] = backfill
    if run.status is dg.DagsterRunStatus.SUCCESS:
        return health.Outcome(
            True, f"{table.name}: the last export run {run.run_id[:8]} succeeded", metadata
        )
    metadata["cause"] = cause or "see the run's log"
    of_backfill = f" (backfill {backfill})" if backfill else ""
    return health.Outcome(
        False,
        f"{table.name}: the last export run {run.run_id[:8]}{of_backfill} "
        f"{run.status.value.lower()}"
        f": {metadata['cause']}; fix the cause and export the table again",
        metadata,
    )


def evaluation(
    table: catalogue.Table, run: dg.DagsterRun, cause: str | None
) -> dg.AssetCheckEvaluation:
    return checks.evaluation(check_key(table), outcome(table, run, cause))


def _cause(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    return step_failure_cause(
        r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event
    )


def _record(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
    run = context.dagster_run
    table = export_table(run)
    if table is None:
        return dg.SkipReason(f"run {run.run_id[:8]} is not a deployment's live export run")
    cause = _cause(context.instance, run) if run.is_failure else None
    context.instance.report_runless_asset_event(evaluation(table, run, cause))
    return None


@dg.run_failure_sensor(
    name="cosmos_export_failures_to_health",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records a failed live export run (a backfill's too) on its table's health: "
    "<table>_last_run fails, naming the run and its cause.",
)
def record_failed_export(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    return _record(context)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="cosmos_export_successes_to_health",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records a successful live export run on its table's health: "
    "<table>_last_run passes again.",
)
def record_succeeded_export(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
    return _record(context)


SENSORS = {
    dg.DagsterRunStatus.FAILURE: record_failed_export,
    dg.DagsterRunStatus.SUCCESS: record_succeeded_export,
}

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def newest_run(instance: dg.DagsterInstance, table: catalogue.Table) -> dg.DagsterRun | None:
    """The table's newest finished live export run for the deployment."""
    tags = {TABLE_TAG: table.name, PARTITION_TAG: table.name}
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags=tags, statuses=FINISHED),
        limit=RUNS_SCANNED,
    )
    return next((run for run in runs if export_table(run) == table), None)


def last_run(instance: dg.DagsterInstance, table: catalogue.Table) -> health.Outcome:
    """The check's result read from the instance: the table's newest finished run."""
    run = newest_run(instance, table)
    if run is None:
        return health.Outcome(True, f"{table.name}: no live export run yet")
    return outcome(table, run, _cause(instance, run) if run.is_failure else None)
