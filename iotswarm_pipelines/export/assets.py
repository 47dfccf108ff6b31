"""The export assets: thin Dagster shells around ``pipeline.export_table`` / ``export_window``.

``cosmos_live_export`` (one partition per table) is what every trigger runs: a UI launch, the
sensors, the schedules, a backfill over several tables and the ``live-cosmos`` command line.
``cosmos_history_export`` (day x table) re-sends one day of one table for backfills.
"""

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import pydantic

from iotswarm_pipelines import executors
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import bad_rows, health, pipeline
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export.object_store import ObjectStore
from iotswarm_pipelines.export.partitions import daily_table_partitions, table_partitions
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.labels import OWNERS, Trigger, trigger_tags

GROUP = "cosmos_export"
TABLE_TAG = "iotswarm/table"
"""Every export run carries its table under this tag; dagster.yaml allows one run per value."""

DEFAULT_BATCH_SIZES: dict[str, int] = {name: 1 for name in catalogue.TABLE_NAMES}
"""Rows per payload when the run config does not say: one, as the existing uploader sent.

The one place to change a table's default (e.g. larger batches for the 1-minute tables).
"""

KINDS = {"oracle", "sqlite", "s3"}
"""Kinds the asset graph shows as icons: read from Oracle (prod) or SQLite (local), written to S3
(prod; a local folder by default)."""


def run_tags(table: str) -> dict[str, str]:
    """The tag every export run of ``table`` carries (the run queue limits on it)."""
    return {TABLE_TAG: catalogue.get_table(table).name}


def _tag_run(context: dg.AssetExecutionContext, table: str) -> None:
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


def _parse_time(name: str, value: str | None) -> str | None:
    """Check a replay time early: a typo must fail the launch, not export the wrong window."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} is not an ISO 8601 date/time; write it like 2024-06-01T00:30 (GMT)"
        ) from None
    if parsed.tzinfo is not None:
        raise ValueError(
            f"{name}={value!r} has a time zone; give GMT without one (2024-06-01T00:30)"
        )
    return value


def _check_sites(sites: list[str] | None) -> None:
    """An empty list is a slip, not "all sites"; which IDs exist only the source can say
    (``export.sites`` matches them when the run reads the table)."""
    if sites is not None and not site_rules.clean(sites):
        raise ValueError("sites is empty; list site IDs like ['ALIC1', 'BALRD'], or leave it out")


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more rows per payload, got {batch_size}")


class LiveExportConfig(dg.Config):
    """Run config of one live export run (one table).

    ``check()`` (not pydantic validators) rejects bad values, so the asset can fail the run
    with one line instead of a validation error wrapped in a step error.
    """

    sites: list[str] | None = pydantic.Field(
        default=None, description="Site IDs to export; all sites of the table when empty."
    )
    fallback_hours: float = pydantic.Field(
        default=pipeline.DEFAULT_FALLBACK_HOURS,
        description=(
            "How far back to start for a site the state has never seen (0 to 438000 hours)."
        ),
    )
    batch_size: int | None = pydantic.Field(
        default=None, description="Rows per payload; the table's default (1) when empty."
    )
    since: str | None = pydantic.Field(
        default=None,
        description="Replay: re-export rows after this GMT time whatever the watermark says.",
    )
    until: str | None = pydantic.Field(
        default=None, description="Replay: stop at this GMT time (inclusive)."
    )
    dry_run: bool = pydantic.Field(
        default=False, description="Build and count payloads; store nothing, move no watermark."
    )
    skip_rows: list[str] | None = pydantic.Field(
        default=None,
        description=(
            "Rows a payload cannot carry that the run may leave out, as SITE@GMT time (e.g. "
            "ALIC1@2024-06-01T10:30), named by a failed run; each skip is recorded in the run."
        ),
    )

    def check(self) -> None:
        """Raises ``ValueError`` (one line) for the first bad value."""
        _check_sites(self.sites)
        bad_rows.parse_skip_rows(self.skip_rows or ())
        pipeline.check_fallback_hours(self.fallback_hours)
        _check_batch_size(self.batch_size)
        _parse_time("since", self.since)
        _parse_time("until", self.until)
        since, until = self.since_time, self.until_time
        if since is not None and until is not None and until <= since:
            raise ValueError(f"until={self.until!r} must be later than since={self.since!r}")

    @property
    def since_time(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None

    @property
    def until_time(self) -> datetime | None:
        return datetime.fromisoformat(self.until) if self.until else None


class HistoryExportConfig(dg.Config):
    """Run config of one historical re-export (one day of one table)."""

    sites: list[str] | None = pydantic.Field(
        default=None, description="Site IDs to re-export; all sites of the table when empty."
    )
    batch_size: int | None = pydantic.Field(
        default=None, description="Rows per payload; the table's default (1) when empty."
    )
    dry_run: bool = pydantic.Field(default=False, description="Build and count; store nothing.")

    def check(self) -> None:
        """Raises ``ValueError`` (one line) for the first bad value."""
        _check_sites(self.sites)
        _check_batch_size(self.batch_size)


def _checked(config: LiveExportConfig | HistoryExportConfig) -> None:
    try:
        config.check()
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
    }
    if summary.lag_seconds is not None:
        metadata["lag_seconds"] = dg.MetadataValue.float(summary.lag_seconds)
    if summary.skipped_rows:  # the operator's choice, on the record
        metadata["skipped_rows"] = dg.MetadataValue.json(summary.skipped_rows)
    return metadata


def summary_from_metadata(table: str, metadata: Mapping[str, Any]) -> pipeline.ExportSummary:
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
        lag_seconds=values.get("lag_seconds"),
        dry_run=values["dry_run"],
    )


def _batch_size(table: str, configured: int | None) -> int:
    return configured or DEFAULT_BATCH_SIZES[catalogue.get_table(table).name]


@dg.asset(
    key=["cosmos", "live_export"],
    group_name=GROUP,
    partitions_def=table_partitions,
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "New rows of one COSMOS table (the partition; read from Oracle in prod, the SQLite "
        "sample locally) as CR1000X JSON payloads: one object per payload under "
        "<bucket_prefix>/<SITE_ID>/LIVE_<table>/ in the object store (S3 in prod, a local folder "
        "by default). Watermarks per site live in the state files. Checks per table: freshness, "
        "state health, export completeness."
    ),
)
def cosmos_live_export(
    context: dg.AssetExecutionContext,
    config: LiveExportConfig,
    cosmos: CosmosSource,
    object_store: dg.ResourceParam[ObjectStore],
    state: StateBackend,
) -> Iterator[dg.MaterializeResult | dg.AssetObservation | dg.AssetCheckEvaluation]:
    _checked(config)
    table = context.partition_key
    _tag_run(context, table)
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
            skip_rows=config.skip_rows or (),
        )
    except site_rules.UnknownSiteError as exc:
        raise dg.Failure(description=f"bad run config: {exc}") from None
    except pipeline.ExportError as exc:
        # Not a materialization, but its counts are recorded for the completeness check.
        metadata = summary_metadata(exc.summary, object_store.describe())
        yield dg.AssetObservation(context.asset_key, partition=table, metadata=metadata)
        yield completeness_evaluation(context.asset_key, exc.summary, context.run.run_id)
        raise dg.Failure(description=str(exc)) from None
    metadata = summary_metadata(summary, object_store.describe())
    yield dg.MaterializeResult(metadata=metadata)
    if not summary.dry_run:
        yield completeness_evaluation(context.asset_key, summary, context.run.run_id)


def completeness_evaluation(
    asset_key: dg.AssetKey, summary: pipeline.ExportSummary, run_id: str
) -> dg.AssetCheckEvaluation:
    """The export completeness check of the run's table, evaluated by the run itself.

    Logged as an evaluation rather than declared in ``check_specs``: the asset would then have
    to yield the checks of all five tables in every (one-table) run.
    """
    outcome = health.completeness(
        summary.table, summary.payloads_built, summary.objects_stored, summary.failed, run_id
    )
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=health.check_name(health.Check.EXPORT_COMPLETENESS, summary.table),
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR,
    )


@dg.asset(
    key=["cosmos", "history_export"],
    group_name=GROUP,
    partitions_def=daily_table_partitions,
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "One day of one COSMOS table (Oracle in prod, the SQLite sample locally) re-sent as "
        "CR1000X payloads to the object store (S3 in prod, a local folder by default) under the "
        "same keys as the live export (identical for batch_size 1). Ignores and never moves the "
        "watermarks."
    ),
)
def cosmos_history_export(
    context: dg.AssetExecutionContext,
    config: HistoryExportConfig,
    cosmos: CosmosSource,
    object_store: dg.ResourceParam[ObjectStore],
) -> dg.MaterializeResult:
    _checked(config)
    # A launch from the UI may hand over the plain "date|table" string.
    keys = daily_table_partitions.get_partition_key_from_str(
        context.partition_key
    ).keys_by_dimension
    table = keys["table"]
    _tag_run(context, table)
    day = datetime.fromisoformat(keys["date"])
    # DATE_TIME ends its period, so a day holds (00:00, 24:00]: midnight is the day before.
    try:
        summary = pipeline.export_window(
            table,
            source=cosmos,
            store=object_store,
            after=day,
            until=day + timedelta(days=1),
            sites=config.sites,
            batch_size=_batch_size(table, config.batch_size),
            dry_run=config.dry_run,
            log=context.log,
        )
    except site_rules.UnknownSiteError as exc:
        raise dg.Failure(description=f"bad run config: {exc}") from None
    return dg.MaterializeResult(metadata=summary_metadata(summary, object_store.describe()))


def _table_tags(partition_key: str) -> dict[str, str]:
    table = partition_key.split("|")[-1]  # multi-partition keys are "date|table"
    return run_tags(table)


def _table_job(
    name: str, asset: dg.AssetsDefinition, partitions: dg.PartitionsDefinition, description: str
):
    """A job whose every partition launch carries the table tag the run queue limits."""
    return dg.define_asset_job(
        name,
        # Without the health checks: they cover all tables and run in their own job.
        selection=dg.AssetSelection.assets(asset).without_checks(),
        config=dg.PartitionedConfig(
            partitions_def=partitions,
            run_config_for_partition_key_fn=lambda key: {},
            tags_for_partition_key_fn=_table_tags,
        ),
        executor_def=executors.export_executor(),
        description=description,
        tags=trigger_tags(Trigger.MANUAL),
    )


live_export_job = _table_job(
    "cosmos_live_export_job",
    cosmos_live_export,
    table_partitions,
    "The live export of one COSMOS table (partition); one run per table at a time.",
)
history_export_job = _table_job(
    "cosmos_history_export_job",
    cosmos_history_export,
    daily_table_partitions,
    "Re-export of one day of one COSMOS table; backfill a date range per table.",
)
