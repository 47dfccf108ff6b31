"""The export's health checks, as thin Dagster shells around the rules in ``health.py``.

Why separate health assets (``health_<TABLE>``), decided from Dagster 1.13's documented
behaviour: the UI shows a check's result only while it targets the asset's latest
materialization, so 15 checks on ``cosmos/live_export`` were reset to "not evaluated" by every
export of any table, and a failed freshness check of one table vanished when another table was
exported. Partitioned checks (``AssetCheckSpec(partitions_def=...)``) are a preview API in 1.13,
and even they are reset by the next materialization of their own partition, which would hide
"this table is behind" as soon as a run of it started. Only the health job materializes a health
asset, and it evaluates every check of that table in the same run (``health_assets.py``); an
evaluation after it (an export's, a run-status sensor's) targets that materialization, so each
result stays until that table's checks run again.

Every live export also evaluates its own table's checks as it finishes (assets.py).
"""

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import dagster as dg

from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import health, scope
from iotswarm_pipelines.export.asset_keys import LIVE_EXPORT_KEY, health_key
from iotswarm_pipelines.export.pipeline import ExportSummary
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.export.store_errors import StateRecoveryError
from iotswarm_pipelines.file_options import DEFAULT_FALLBACK_HOURS

GROUP = "cosmos_export"
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

CHECKS: dict[dg.AssetCheckKey, tuple[health.Check, catalogue.Table]] = {
    dg.AssetCheckKey(health_key(table), health.check_name(kind, table)): (kind, table)
    for table in catalogue.TABLES.values()
    for kind in health.Check
}
"""Every check's key, and the kind and table it stands for."""

CHECK_SPECS = [
    dg.AssetCheckSpec(
        name=key.name,
        asset=key.asset_key,
        description=_DESCRIPTIONS[kind].format(
            table=table.name, limit=health.FRESHNESS_THRESHOLDS[table.name]
        ),
    )
    for key, (kind, table) in CHECKS.items()
]


def check_key(kind: health.Check, table: catalogue.Table) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(health_key(table), health.check_name(kind, table))


def last_export(
    instance: dg.DagsterInstance, table: catalogue.Table
) -> tuple[Mapping[str, Any], str] | None:
    """The counts (metadata) and run id of the table's newest export that was not a dry run
    nor a one-off run to another destination (``scope``).

    Successful runs materialize the partition; runs that failed to store some payloads record
    the same counts as an observation, so both are read and the newer one wins.
    """
    records_filter = dg.AssetRecordsFilter(asset_key=LIVE_EXPORT_KEY, asset_partitions=[table.name])
    records = [
        *instance.fetch_materializations(records_filter, limit=RECORDS_SCANNED).records,
        *instance.fetch_observations(records_filter, limit=RECORDS_SCANNED).records,
    ]
    for record in sorted(records, key=lambda r: r.storage_id, reverse=True):
        event = record.asset_materialization or record.asset_observation
        metadata = {k: v.value for k, v in (event.metadata if event else {}).items()}
        if (
            "payloads" in metadata
            and not metadata.get("dry_run")
            and not metadata.get(scope.ONE_OFF_METADATA)
        ):
            return metadata, record.run_id
    return None


def _completeness(instance: dg.DagsterInstance, table: catalogue.Table) -> health.Outcome:
    last = last_export(instance, table)
    if last is None:
        return health.Outcome(True, f"{table.name}: no live export has stored anything yet")
    counts, run_id = last
    return health.completeness(
        table, counts["payloads"], counts["objects"], counts["failed"], run_id
    )


def _freshness(table: catalogue.Table, cosmos: CosmosSource, state: StateBackend, now: datetime):
    try:
        newest, current = cosmos.newest_times(table), state.load(table)
    except (SourceError, StateRecoveryError) as exc:
        return health.Outcome(False, f"{table.name}: cannot measure freshness: {exc}")
    return health.freshness(table, newest, current, now, DEFAULT_FALLBACK_HOURS)


def evaluate(
    kind: health.Check,
    table: catalogue.Table,
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


def _fields(key: dg.AssetCheckKey, outcome: health.Outcome) -> dict[str, Any]:
    return {
        "asset_key": key.asset_key,
        "check_name": key.name,
        "passed": outcome.passed,
        "description": outcome.description,
        "metadata": outcome.metadata,
        "severity": (
            dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR
        ),
    }


def evaluation(key: dg.AssetCheckKey, outcome: health.Outcome) -> dg.AssetCheckEvaluation:
    """A check result as an event, which an export run logs for its own table."""
    return dg.AssetCheckEvaluation(**_fields(key, outcome))


def check_result(key: dg.AssetCheckKey, outcome: health.Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(**_fields(key, outcome))


def after_export(
    summary: ExportSummary, run_id: str, cosmos: CosmosSource, state: StateBackend
) -> Iterator[dg.AssetCheckEvaluation]:
    """The checks of the table an export run has just finished, evaluated by that run.

    Completeness comes from the run's own counts; a run that stored everything also measures
    state health and freshness, so fixing a stale table turns its health asset green at once.
    """
    table = summary.table
    outcome = health.completeness(
        table, summary.payloads_built, summary.objects_stored, summary.failed, run_id
    )
    yield evaluation(check_key(health.Check.EXPORT_COMPLETENESS, table), outcome)
    if outcome.passed:
        yield evaluation(
            check_key(health.Check.STATE_HEALTH, table),
            health.state_health(table, *state.copies(table)),
        )
        yield evaluation(
            check_key(health.Check.FRESHNESS, table), _freshness(table, cosmos, state, utc_now())
        )
