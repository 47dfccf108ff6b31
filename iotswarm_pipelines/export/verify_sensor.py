"""The sensor that makes a table behind read failed on the partitions page (issue 22 item 6).

The health job (and each export) records every table's freshness check on its health asset;
the graph turns red. The partition of ``cosmos/live_export`` turned red only when a run of it
failed, so a table nobody exported (its new-rows sensor stopped) read "materialized" for hours
(see ``verify.py`` for Dagster's rule). This sensor watches each table's freshness check and,
when it fails, launches one verify-only run of the table's partition: behind at that moment, the
run fails with the verdict and the likely cause, and the partition reads failed until the next
export of the table materializes it.

One verify run per table and episode: the cursor keeps, per table, the latest materialization of
its partition when its verify run was requested; nothing more is requested until the partition
is materialized again (a new export, which may have left it behind again) or the freshness check
passes (the episode ends). A partition that already reads failed (an export of it failed) or is
being materialized (a run queued or running will tell) gets none.

Decided against: a failed run for each health tick (every 15 minutes a new failure and alert
while one table waits), and a runless event (Dagster cannot mark a partition failed with one).
"""

import json

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import checks, health, verify
from iotswarm_pipelines.export.asset_keys import LIVE_EXPORT_KEY
from iotswarm_pipelines.export.assets import cosmos_live_export, live_export_job, run_tags
from iotswarm_pipelines.export.partitions import table_partitions
from iotswarm_pipelines.labels import Trigger, trigger_tags

SENSOR_NAME = "cosmos_behind_tables_to_partitions"
INTERVAL_SECONDS = 60

VERIFY_RUN_CONFIG = {"ops": {cosmos_live_export.op.name: {"config": {"verify_only": True}}}}


def _freshness_failed(instance: dg.DagsterInstance, table: catalogue.Table) -> tuple[bool, int]:
    """Whether the table's newest freshness result failed, and that result's id (0: none yet,
    or one being evaluated now)."""
    key = checks.check_key(health.Check.FRESHNESS, table)
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None or record.status is AssetCheckExecutionRecordStatus.PLANNED:
        return False, 0
    return record.status is AssetCheckExecutionRecordStatus.FAILED, record.id


def _latest_materialization(instance: dg.DagsterInstance, table: catalogue.Table) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LIVE_EXPORT_KEY, asset_partitions=[table.name]), limit=1
    ).records
    return records[0].storage_id if records else 0


def _partitions_failed_or_running(instance: dg.DagsterInstance) -> set[str]:
    """The partitions the UI shows failed or materializing (the same status cache it reads)."""
    value = get_and_update_asset_status_cache_value(instance, LIVE_EXPORT_KEY, table_partitions)
    if value is None:
        return set()
    failed = value.deserialize_failed_partition_subsets(table_partitions)
    running = value.deserialize_in_progress_partition_subsets(table_partitions)
    return {*failed.get_partition_keys(), *running.get_partition_keys()}


def verify_request(table: catalogue.Table, result_id: int) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{table.name}:verify:{result_id}",
        partition_key=table.name,
        run_config=VERIFY_RUN_CONFIG,
        tags={**run_tags(table), **trigger_tags(Trigger.SENSOR), verify.VERIFY_TAG: "true"},
    )


@dg.sensor(
    name=SENSOR_NAME,
    job=live_export_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a table's freshness check fails and no run of it failed or is under way, "
    "launches one verify-only run of its cosmos/live_export partition: behind, the run fails "
    "with the cause, and the partition reads failed until the table's next export.",
)
def verify_behind_tables(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    handled: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    busy: set[str] | None = None
    requests = []
    for table in catalogue.TABLES.values():
        behind, result_id = _freshness_failed(context.instance, table)
        if not behind:
            if result_id:  # fresh again: the episode is over
                handled.pop(table.name, None)
            continue
        mark = _latest_materialization(context.instance, table)
        if handled.get(table.name) == mark:
            continue
        busy = _partitions_failed_or_running(context.instance) if busy is None else busy
        if table.name in busy:
            continue
        handled[table.name] = mark
        requests.append(verify_request(table, result_id))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(handled, sort_keys=True))
