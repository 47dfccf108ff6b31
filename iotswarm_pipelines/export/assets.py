"""The export assets: thin Dagster shells around ``pipeline.export_table`` / ``export_window``.

``cosmos_live_export`` (one partition per table) is what every trigger runs: a UI launch, the
sensors, the schedules, a backfill over several tables and the ``live-cosmos`` command line.
``cosmos_history_export`` (its own group) re-sends a range of days of one table that the
operator must pick: it is unpartitioned, so no "Materialize all" can launch thirteen years of
daily partitions, and the UI shows its past runs instead of 24,000 "missing" days.
"""

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import pydantic

from iotswarm_pipelines import executors, run_loggers
from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import bad_rows, checks, health, pipeline, scope, verify
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.asset_keys import HISTORY_EXPORT_KEY, LIVE_EXPORT_KEY
from iotswarm_pipelines.export.object_store import ObjectStore
from iotswarm_pipelines.export.partitions import (
    HISTORY_START_DATE,
    partition_table,
    table_partitions,
)
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.file_options import BatchOptions, LiveRunOptions
from iotswarm_pipelines.labels import OWNERS, Trigger, trigger_tags
from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.metrics.export import ExportRun, push_export

_log = logging.getLogger(__name__)

GROUP = checks.GROUP
HISTORY_GROUP = "cosmos_history"
TABLE_TAG = "iotswarm/table"
"""Every export run carries its table under this tag; dagster.yaml allows one run per value."""

DEFAULT_BATCH_SIZES: dict[str, int] = {name: 1 for name in catalogue.TABLE_NAMES}
"""Rows per payload when the run config does not say: one, as the existing uploader sent.

The one place to change a table's default (e.g. larger batches for the 1-minute tables).
"""

KINDS = {"s3"}
"""The kind the asset graph shows as an icon: where these assets' data lives (S3 in prod; a
folder locally, as each description says). Not the source too: Oracle is upstream, as Dagster's
kinds describe an asset's own storage, and each icon takes room from the Catalog's name column
(with ``oracle`` and ``sqlite`` too it cut ``cosmos / history_export`` at 1280 px and
``cosmos / reconciliation`` at 1400; ``test_ui_verdicts_e2e``)."""


def run_tags(table: catalogue.Table) -> dict[str, str]:
    """The tag every export run of ``table`` carries (the run queue limits on it)."""
    return {TABLE_TAG: table.name}


def _tag_run(context: dg.AssetExecutionContext, table: catalogue.Table) -> None:
    """Give a run launched from the asset graph the tags a job launch has, for filtering.

    The graph launches through Dagster's implicit asset job, whose runs carry only
    ``dagster/partition``, which the queue already limits per table.
    """
    missing = {
        key: value
        for key, value in {**run_tags(table), **trigger_tags(Trigger.MANUAL)}.items()
        if key not in context.run.tags
    }
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


class LiveExportConfig(dg.Config, LiveRunOptions):
    """Run config of one live export run (one table): the export's options and the run's own.

    ``check()`` (not pydantic validators) rejects bad values, so the asset can fail the run
    with one line instead of a validation error wrapped in a step error.
    """

    skip_rows: list[str] | None = pydantic.Field(
        default=None,
        description=(
            "Rows a payload cannot carry that the run may leave out, as SITE@GMT time (e.g. "
            "ALIC1@2024-06-01T10:30), named by a failed run; each skip is recorded in the run."
        ),
    )
    verify_only: bool = pydantic.Field(
        default=False,
        description=(
            "Export nothing: measure the table's freshness as the health job does and fail the "
            "run when it is behind (its partition then reads failed until the next export); "
            "the other options are ignored."
        ),
    )

    def check(self) -> None:
        """Raises ``ValueError`` (one line) for the first bad value."""
        self.check_options()
        bad_rows.parse_skip_rows(self.skip_rows or ())


def _parse_day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a date; write it like 2024-06-01") from None


class HistoryExportConfig(dg.Config, BatchOptions):
    """Run config of one historical re-export: a range of whole GMT days of one table.

    No defaults for the table and the days: a re-export of history is a choice to make, never
    what a click on "Materialize" does by itself.
    """

    table: catalogue.TableName = pydantic.Field(description="The COSMOS table to re-send.")
    first_day: str = pydantic.Field(description="First GMT day to re-send, e.g. 2024-06-01.")
    last_day: str = pydantic.Field(description="Last GMT day to re-send (inclusive).")
    dry_run: bool = pydantic.Field(default=False, description="Build and count; store nothing.")

    def check(self, today: date) -> None:
        """Raises ``ValueError`` (one line) for the first bad value."""
        self.check_options()
        first, last = self.days
        if last < first:
            raise ValueError(f"last_day {last} is before first_day {first}")
        if first < HISTORY_START_DATE or last > today:
            raise ValueError(
                f"days must lie between {HISTORY_START_DATE} (the first COSMOS data) and today "
                f"({today}), got {first} .. {last}"
            )

    @property
    def days(self) -> tuple[date, date]:
        return _parse_day("first_day", self.first_day), _parse_day("last_day", self.last_day)


def _checked(check: Callable[[], None]) -> None:
    try:
        check()
    except ValueError as exc:
        raise dg.Failure(description=f"bad run config: {exc}") from None


def summary_metadata(summary: pipeline.ExportSummary, destination: str) -> dict[str, Any]:
    """Numeric stage counts (plotted by the UI across runs) plus where the objects went."""
    metadata: dict[str, Any] = {
        "rows_read": dg.MetadataValue.int(summary.rows_read),
        "payloads": dg.MetadataValue.int(summary.payloads_built),
        "objects": dg.MetadataValue.int(summary.objects_stored),
        "bytes": dg.MetadataValue.int(summary.bytes_stored),
        "failed": dg.MetadataValue.int(summary.failed),
        "sites": dg.MetadataValue.int(summary.sites),
        "sites_advanced": dg.MetadataValue.int(summary.sites_advanced),
        "dry_run": dg.MetadataValue.bool(summary.dry_run),
        "destination": dg.MetadataValue.text(destination),
        "watermarks": dg.MetadataValue.json(
            {site: when.isoformat() for site, when in summary.watermarks.items()}
        ),
        "advanced_sites": dg.MetadataValue.json(list(summary.advanced)),
    }
    if summary.lag_seconds is not None:
        metadata["lag_seconds"] = dg.MetadataValue.float(summary.lag_seconds)
    if summary.skipped_rows:  # the operator's choice, on the record
        metadata["skipped_rows"] = dg.MetadataValue.json(summary.skipped_rows)
    return metadata


def summary_from_metadata(
    table: catalogue.Table, metadata: Mapping[str, Any]
) -> pipeline.ExportSummary:
    """The run's ``ExportSummary`` back from its materialization (for the command line)."""
    values = {name: getattr(value, "value", value) for name, value in metadata.items()}
    return pipeline.ExportSummary(
        table=table,
        sites=values["sites"],
        rows_read=values["rows_read"],
        payloads_built=values["payloads"],
        objects_stored=values["objects"],
        bytes_stored=values["bytes"],
        failed=values["failed"],
        sites_advanced=values["sites_advanced"],
        watermarks={s: datetime.fromisoformat(t) for s, t in values["watermarks"].items()},
        advanced=tuple(values.get("advanced_sites", ())),
        lag_seconds=values.get("lag_seconds"),
        dry_run=values["dry_run"],
    )


def _batch_size(table: catalogue.Table, configured: int | None) -> int:
    return configured or DEFAULT_BATCH_SIZES[table.name]


@dg.asset(
    key=LIVE_EXPORT_KEY,
    group_name=GROUP,
    partitions_def=table_partitions,
    # A verify-only run of a fresh table ends without materializing (verify.py).
    output_required=False,
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "New rows of one COSMOS table (the partition; read from Oracle in prod, the SQLite "
        "sample locally) as CR1000X JSON payloads: one object per payload under "
        "<bucket_prefix>/<SITE_ID>/LIVE_<table>/ in the object store (S3 in prod, a local folder "
        "by default). Watermarks per site live in the state files. Each table's freshness, state "
        "health and export completeness are checks on its asset health_<TABLE>."
    ),
)
def cosmos_live_export(
    context: dg.AssetExecutionContext,
    config: LiveExportConfig,
    cosmos: dg.ResourceParam[CosmosSource],
    object_store: dg.ResourceParam[ObjectStore],
    state: dg.ResourceParam[StateBackend],
) -> Iterator[dg.MaterializeResult | dg.AssetObservation | dg.AssetCheckEvaluation]:
    _checked(config.check)
    table = partition_table(context.partition_key)
    _tag_run(context, table)
    if config.verify_only:
        _verify(context, table, cosmos, state)
        return
    started = time.time()

    def push(summary: pipeline.ExportSummary | None, succeeded: bool = False) -> None:
        """The run's metrics to the Pushgateway, if one is named (dry runs store nothing)."""
        if config.dry_run:
            return
        run = ExportRun(
            table=table.name,
            started=started,
            ended=time.time(),
            succeeded=succeeded,
            rows=summary.rows_read if summary else 0,
            objects=summary.objects_stored if summary else 0,
            site_lags=summary.site_lags if summary else {},
            freshness_threshold=health.FRESHNESS_THRESHOLDS[table.name].total_seconds(),
        )
        push_export(exposition.pushgateway_url(config.pushgateway), run, warn)

    def warn(line: str) -> None:
        context.log.warning(line)
        _log.warning(line)  # on stderr too: live-cosmos shows no Dagster log in the terminal

    try:
        summary = pipeline.export_table(
            table,
            source=cosmos,
            store=object_store,
            state=state,
            sites=config.sites,
            fallback_hours=config.fallback_hours,
            batch_size=_batch_size(table, config.batch_size),
            since=config.since_time,
            until=config.until_time,
            dry_run=config.dry_run,
            log=context.log,
            payload_format=config.payload_format,
            skip_rows=config.skip_rows or (),
        )
    except site_rules.UnknownSiteError as exc:
        push(None)
        raise dg.Failure(description=f"bad run config: {exc}") from None
    except pipeline.ExportError as exc:
        push(exc.summary)
        # Not a materialization, but its counts are recorded for the completeness check.
        metadata = _run_metadata(context, exc.summary, object_store)
        yield dg.AssetObservation(context.asset_key, partition=table.name, metadata=metadata)
        yield from _judge(context, exc.summary, cosmos, state)
        raise dg.Failure(description=str(exc)) from None
    except BaseException:  # the source or the state store failed: still a failed run to report
        push(None)
        raise
    push(summary, succeeded=True)
    yield dg.MaterializeResult(metadata=_run_metadata(context, summary, object_store))
    if not summary.dry_run:
        yield from _judge(context, summary, cosmos, state)


def _verify(
    context: dg.AssetExecutionContext,
    table: catalogue.Table,
    cosmos: CosmosSource,
    state: StateBackend,
) -> None:
    """Fails the run when the table is behind; a fresh table's run materializes nothing."""
    context.instance.add_run_tags(context.run.run_id, {verify.VERIFY_TAG: "true"})
    outcome = verify.verify(table, cosmos, state, context.instance)
    if not outcome.passed:
        raise dg.Failure(description=outcome.description, metadata=outcome.metadata)
    context.log.info(f"{outcome.description}; verify only: nothing exported, nothing materialized")


def _run_metadata(
    context: dg.AssetExecutionContext, summary: pipeline.ExportSummary, store: ObjectStore
) -> dict[str, Any]:
    metadata = summary_metadata(summary, store.describe())
    if scope.is_one_off(context.run.tags):
        metadata[scope.ONE_OFF_METADATA] = dg.MetadataValue.bool(True)
    return metadata


def _judge(
    context: dg.AssetExecutionContext,
    summary: pipeline.ExportSummary,
    cosmos: CosmosSource,
    state: StateBackend,
) -> Iterator[dg.AssetCheckEvaluation]:
    """The table's health checks, unless the run wrote elsewhere than the deployment does."""
    if scope.is_one_off(context.run.tags):
        context.log.info(
            f"{summary.table.name}: a one-off run to {context.run.tags[scope.DESTINATION_TAG]}, "
            "not the deployment's destination: its health checks are not evaluated"
        )
        return
    yield from checks.after_export(summary, context.run.run_id, cosmos, state)


@dg.asset(
    key=HISTORY_EXPORT_KEY,
    group_name=HISTORY_GROUP,
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "A range of whole GMT days of one COSMOS table (Oracle in prod, the SQLite sample "
        "locally) re-sent as CR1000X payloads to the object store (S3 in prod, a local folder by "
        "default) under the same keys as the live export (identical for batch_size 1). Table and "
        "days must be picked in the launchpad. Ignores and never moves the watermarks."
    ),
)
def cosmos_history_export(
    context: dg.AssetExecutionContext,
    config: HistoryExportConfig,
    cosmos: dg.ResourceParam[CosmosSource],
    object_store: dg.ResourceParam[ObjectStore],
) -> dg.MaterializeResult:
    _checked(lambda: config.check(utc_now().date()))
    table = catalogue.get_table(config.table)
    _tag_run(context, table)
    first, last = config.days
    # DATE_TIME ends its period, so a day holds (00:00, 24:00]: midnight is the day before.
    after = datetime.combine(first, datetime.min.time())
    try:
        summary = pipeline.export_window(
            table,
            source=cosmos,
            store=object_store,
            after=after,
            until=datetime.combine(last, datetime.min.time()) + timedelta(days=1),
            sites=config.sites,
            batch_size=_batch_size(table, config.batch_size),
            dry_run=config.dry_run,
            log=context.log,
            payload_format=config.payload_format,
        )
    except site_rules.UnknownSiteError as exc:
        raise dg.Failure(description=f"bad run config: {exc}") from None
    if not summary.rows_read:
        raise dg.Failure(description=_empty_window(cosmos, table, first, last))
    metadata = summary_metadata(summary, object_store.describe())
    metadata["days"] = dg.MetadataValue.text(f"{first} .. {last}")
    return dg.MaterializeResult(metadata=metadata)


def _empty_window(cosmos: CosmosSource, table: catalogue.Table, first: date, last: date) -> str:
    """Why a history re-export read nothing: the days asked for, and the days the source holds
    (a DATE_TIME ends its period, so midnight belongs to the day before)."""
    asked = f"the source holds no {table.name} rows from {first} to {last} (GMT days)"
    sites = cosmos.list_sites(table)
    oldest = cosmos.first_times_after(table, dict.fromkeys(sites, state_rules.OLDEST_ROW_TIME))
    newest = cosmos.newest_times(table, sites)
    if not oldest or not newest:
        return f"{asked}; it holds none at all"
    ends = (min(oldest.values()), max(newest.values()))
    held = [(end - timedelta(microseconds=1)).date() for end in ends]
    return f"{asked}; it holds {held[0]} .. {held[1]}: pick days in that range"


live_export_job = dg.define_asset_job(
    "cosmos_live_export_job",
    # Without the health checks: they are on the health assets and run in their own job.
    selection=dg.AssetSelection.assets(cosmos_live_export).without_checks(),
    # Every partition launch carries the table tag the run queue limits.
    config=dg.PartitionedConfig(
        partitions_def=table_partitions,
        run_config_for_partition_key_fn=lambda key: {},
        tags_for_partition_key_fn=lambda key: run_tags(partition_table(key)),
    ),
    executor_def=executors.export_executor(),
    description="The live export of one COSMOS table (partition); one run per table at a time.",
    tags=trigger_tags(Trigger.MANUAL),
)
history_export_job = dg.define_asset_job(
    "cosmos_history_export_job",
    selection=dg.AssetSelection.assets(cosmos_history_export),
    executor_def=executors.export_executor(),
    description="Re-export a range of days of one COSMOS table (pick them in the launchpad).",
    tags=trigger_tags(Trigger.MANUAL),
)


def execute_live_export(
    table: catalogue.Table,
    resources: Mapping[str, Any],
    run_config: Mapping[str, Any],
    instance: dg.DagsterInstance | None,
    tags: Mapping[str, str],
) -> dg.ExecuteInProcessResult:
    """One table's live export in this process (``live-cosmos``, the demo), as a run of
    ``cosmos_live_export_job``: the job name an operator looks for in the UI, rather than the
    ``__ephemeral_asset_job__`` that ``dg.materialize`` would record."""
    job = dg.Definitions(
        assets=[cosmos_live_export],
        jobs=[live_export_job],
        resources=resources,
        loggers=run_loggers.LOGGERS,
    ).resolve_job_def(live_export_job.name)
    return job.execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=table.name,
        tags=tags,
        raise_on_error=False,
    )
