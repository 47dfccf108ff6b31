"""The export's asset checks: thin Dagster shells around the rules in ``health.py``.

Three checks per table on ``cosmos/live_export`` (freshness, state health, export completeness),
all in one op, so the health job is one cheap step; ``can_subset`` lets the UI execute any one.
Every live export run also records its own table's completeness as it finishes (assets.py).
"""

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource, SourceError
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.pipeline import DEFAULT_FALLBACK_HOURS, utc_now
from iotswarm_pipelines.export.state_backend import StateBackend, StateRecoveryError
from iotswarm_pipelines.labels import Trigger, trigger_tags

HEALTH_CRON = "*/15 * * * *"
RECORDS_SCANNED = 20
"""How many of a table's latest export records the completeness check looks through for the
newest one that was not a dry run."""

_DESCRIPTIONS = {
    health.Check.FRESHNESS: (
        "The slowest site's watermark trails the source's newest row of {table} by at most {limit} "
        "(three logging periods, at least 15 minutes)."
    ),
    health.Check.STATE_HEALTH: (
        "The main and backup state files of {table} are both readable and equal."
    ),
    health.Check.EXPORT_COMPLETENESS: (
        "The last live export of {table} stored one object for every payload it built."
    ),
}

_CHECKS: dict[str, tuple[health.Check, str]] = {
    health.check_name(kind, table): (kind, table)
    for table in catalogue.TABLE_NAMES
    for kind in health.Check
}
"""Every check's name, and the kind and table it stands for."""

CHECK_SPECS = [
    dg.AssetCheckSpec(
        name=name,
        asset=cosmos_live_export.key,
        description=_DESCRIPTIONS[kind].format(
            table=table, limit=health.FRESHNESS_THRESHOLDS[table]
        ),
    )
    for name, (kind, table) in _CHECKS.items()
]


def last_export(instance: dg.DagsterInstance, table: str) -> tuple[Mapping[str, Any], str] | None:
    """The counts (metadata) and run id of the table's newest export that was not a dry run.

    Successful runs materialize the partition; runs that failed to store some payloads record
    the same counts as an observation, so both are read and the newer one wins.
    """
    records_filter = dg.AssetRecordsFilter(
        asset_key=cosmos_live_export.key, asset_partitions=[table]
    )
    records = [
        *instance.fetch_materializations(records_filter, limit=RECORDS_SCANNED).records,
        *instance.fetch_observations(records_filter, limit=RECORDS_SCANNED).records,
    ]
    for record in sorted(records, key=lambda r: r.storage_id, reverse=True):
        event = record.asset_materialization or record.asset_observation
        metadata = {k: v.value for k, v in (event.metadata if event else {}).items()}
        if "payloads" in metadata and not metadata.get("dry_run"):
            return metadata, record.run_id
    return None


def _completeness(instance: dg.DagsterInstance, table: str) -> health.Outcome:
    last = last_export(instance, table)
    if last is None:
        return health.Outcome(True, f"{table}: no live export has stored anything yet")
    counts, run_id = last
    return health.completeness(
        table, counts["payloads"], counts["objects"], counts["failed"], run_id
    )


def _freshness(table: str, cosmos: CosmosSource, state: StateBackend, now: datetime):
    try:
        newest, current = cosmos.newest_times(table), state.load(table)
    except (SourceError, StateRecoveryError) as exc:
        return health.Outcome(False, f"{table}: cannot measure freshness: {exc}")
    return health.freshness(table, newest, current, now, DEFAULT_FALLBACK_HOURS)


def evaluate(
    kind: health.Check,
    table: str,
    cosmos: CosmosSource,
    state: StateBackend,
    instance: dg.DagsterInstance,
    now: datetime,
) -> health.Outcome:
    if kind is health.Check.FRESHNESS:
        return _freshness(table, cosmos, state, now)
    if kind is health.Check.STATE_HEALTH:
        return health.state_health(table, *state.copies(table))
    return _completeness(instance, table)


def check_result(key: dg.AssetCheckKey, outcome: health.Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR,
    )


@dg.multi_asset_check(
    name="cosmos_health",
    specs=CHECK_SPECS,
    can_subset=True,
    description="Freshness, state health and export completeness of every COSMOS table.",
)
def cosmos_health(
    context: dg.AssetCheckExecutionContext, cosmos: CosmosSource, state: StateBackend
) -> Iterator[dg.AssetCheckResult]:
    now = utc_now()
    for key in sorted(context.selected_asset_check_keys, key=_evaluation_order):
        kind, table = _CHECKS[key.name]
        yield check_result(key, evaluate(kind, table, cosmos, state, context.instance, now))


def _evaluation_order(key: dg.AssetCheckKey) -> tuple[bool, str]:
    """State health first: freshness loads the state, and a load rewrites a missing or corrupt
    main file from the backup, which would hide the damage from a later state health check."""
    kind, _ = _CHECKS[key.name]
    return kind is not health.Check.STATE_HEALTH, key.name


health_checks_job = dg.define_asset_job(
    "cosmos_health_checks",
    selection=dg.AssetSelection.checks(cosmos_health),
    # One quick step: a process of its own would cost more than the checks.
    executor_def=dg.in_process_executor,
    tags=trigger_tags(Trigger.MANUAL),
    description="Evaluates every COSMOS table's freshness, state health and export completeness.",
)

health_checks_schedule = dg.ScheduleDefinition(
    name="cosmos_health_checks_every_15_minutes",
    cron_schedule=HEALTH_CRON,
    job=health_checks_job,
    execution_timezone="UTC",
    tags=trigger_tags(Trigger.SCHEDULE),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Evaluates the export's asset checks every 15 minutes.",
)
