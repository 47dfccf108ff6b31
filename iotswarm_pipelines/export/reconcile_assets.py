"""Is every source row in the object store? The day x table asset, its job and daily schedule.

A thin Dagster shell over ``reconcile.reconcile_day``. A partition (one UTC day of one table)
materializes only when the store holds every source row up to the watermarks (after healing,
when asked), so the partition grid shows complete days green and incomplete ones as failed.

A failed partition records why as an observation of the partition, in the failing run: its
counts and a one-line verdict, or the cause when it could not be reconciled. Dagster 1.13 keeps
no other per-partition record of a failure (its failure events are dropped by the open-source
event storage), and the partition's pane lists observations under "View all historical events"
(and shows them under Metadata once the partition has been materialized before), so the
operator reads the numbers beside the red cell; they also plot across runs.
"""

import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import pydantic

from iotswarm_pipelines import executors
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.export import reconcile
from iotswarm_pipelines.export.assets import DEFAULT_BATCH_SIZES, KINDS
from iotswarm_pipelines.export.object_store import ObjectStore
from iotswarm_pipelines.export.partitions import daily_table_partitions, partition_table
from iotswarm_pipelines.export.reconciliation import TableDay
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.file_options import BatchOptions
from iotswarm_pipelines.labels import OWNERS, Trigger, trigger_tags
from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.metrics.export import ReconciledDay, push_reconcile

GROUP = "cosmos_reconciliation"
"""Its own group: the export group's "Materialize all" must not select 24,000 past days."""
SCHEDULE_CRON = "30 1 * * *"
"""01:30 UTC: yesterday's rows have had an hour and a half to arrive and be exported."""


class ReconcileConfig(dg.Config, BatchOptions):
    """Run config of one reconciliation (one day of one table). ``batch_size``, ``prog_name``
    and ``strict_json`` must be the export's: they predict its keys and make healed payloads;
    ``sites`` are the sites to check."""

    heal: bool = pydantic.Field(
        default=False,
        description="Re-export the missing rows (same payloads and keys as the export).",
    )

    def check(self) -> None:
        """Raises ``ValueError`` (one line) for the first bad value."""
        for site in self.sites or ():
            catalogue.get_site(site)
        self.check_batch_size()


def reconcile_metadata(result: TableDay, destination: str) -> dict[str, Any]:
    """The counts as numbers (plotted across runs), the problem rows per site, where it looked."""
    metadata: dict[str, Any] = {
        name: dg.MetadataValue.int(value) for name, value in result.counts().items()
    }
    metadata["complete"] = dg.MetadataValue.bool(result.complete)
    metadata["destination"] = dg.MetadataValue.text(destination)
    metadata["problems"] = dg.MetadataValue.json(result.problems())
    return metadata


def partition_of(key: str) -> tuple[catalogue.Table, date]:
    """The table and day of a ``date|table`` partition key (a UI launch hands over the string)."""
    keys = daily_table_partitions.get_partition_key_from_str(key).keys_by_dimension
    return partition_table(keys["table"]), date.fromisoformat(keys["date"])


@dg.asset(
    key=["cosmos", "reconciliation"],
    group_name=GROUP,
    partitions_def=daily_table_partitions,
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "Whether the object store (S3 in prod, a local folder by default) holds every row of one "
        "COSMOS table on one UTC day: a partition is materialized when nothing is missing, failed "
        "when rows are. Counts rows, found, missing, duplicated (in two objects) and orphaned "
        "(gone from the source); with heal, re-exports the missing rows. Never moves watermarks."
    ),
)
def cosmos_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconcileConfig,
    cosmos: dg.ResourceParam[CosmosSource],
    object_store: dg.ResourceParam[ObjectStore],
    state: dg.ResourceParam[StateBackend],
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    try:
        result = _reconcile(context, config, cosmos, object_store, state)
    except Exception as exc:  # any cause: the partition's history says it, the run fails as before
        cause = first_line(exc)
        yield _observation(context, f"not reconciled: {cause}", {"cause": cause})
        raise
    metadata = reconcile_metadata(result, object_store.describe())
    if result.complete:
        yield dg.MaterializeResult(metadata=metadata)
        return
    line = verdict(result, config.heal)
    yield _observation(context, line, metadata)
    raise dg.Failure(description=line, metadata=metadata)


def _reconcile(
    context: dg.AssetExecutionContext,
    config: ReconcileConfig,
    cosmos: CosmosSource,
    object_store: ObjectStore,
    state: StateBackend,
) -> TableDay:
    try:
        config.check()
    except ValueError as exc:
        raise dg.Failure(description=f"bad run config: {exc}") from None
    table, day = partition_of(context.partition_key)
    result = reconcile.reconcile_day(
        table,
        day,
        source=cosmos,
        store=object_store,
        state=state,
        sites=config.sites,
        batch_size=config.batch_size or DEFAULT_BATCH_SIZES[table.name],
        payload_format=config.payload_format,
        heal=config.heal,
        log=context.log,
    )
    url = exposition.pushgateway_url(None)  # IOTSWARM_PUSHGATEWAY
    push_reconcile(url, table.name, [ReconciledDay.of(result)], time.time(), context.log.warning)
    return result


def verdict(result: TableDay, heal: bool) -> str:
    """The line a failed partition leads with, in its history and its run: the counts, the first
    rows at fault, and what to do."""
    line = reconcile.describe(result)
    faults = reconcile.first_faults(result)
    if faults:
        line += f"; first {faults}"
    return line if heal else line + "; launch it with heal: true to re-export the missing rows"


def _observation(
    context: dg.AssetExecutionContext, description: str, metadata: dict[str, Any]
) -> dg.AssetObservation:
    return dg.AssetObservation(
        context.asset_key,
        partition=context.partition_key,
        description=description,
        metadata=metadata,
    )


reconcile_job = dg.define_asset_job(
    "cosmos_reconcile_job",
    selection=[cosmos_reconciliation],
    executor_def=executors.export_executor(),
    tags=trigger_tags(Trigger.MANUAL),
    description="Reconciles one day of one COSMOS table with the object store; backfill a range.",
)


def heal_run_config() -> dict[str, Any]:
    return {"ops": {cosmos_reconciliation.op.name: {"config": {"heal": True}}}}


@dg.schedule(
    name="cosmos_reconcile_yesterday",
    cron_schedule=SCHEDULE_CRON,
    job=reconcile_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night, reconciles yesterday (UTC) for every table and heals what is "
    "missing.",
)
def reconcile_yesterday(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    day = (context.scheduled_execution_time.date() - timedelta(days=1)).isoformat()
    for table in catalogue.TABLE_NAMES:
        yield dg.RunRequest(
            run_key=f"reconcile:{day}|{table}",
            partition_key=dg.MultiPartitionKey({"date": day, "table": table}),
            run_config=heal_run_config(),
            tags=trigger_tags(Trigger.SCHEDULE),
        )
