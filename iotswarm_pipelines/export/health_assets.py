"""The health assets ``cosmos/health/<TABLE>``, recorded by the health job with the verdict.

The Catalog lists an asset by its last materialization: a health asset that only carried checks
read "Never materialized" there while the graph showed its checks failed. The health job (every
15 minutes) evaluates every check of each table (the three of ``checks.py`` and
``<table>_last_run`` of ``export_runs.py``) and records a materialization of the table's health
asset in the same run, with the verdict (``health.verdict``) as its metadata: the Catalog, the
asset's page and the graph say the same thing. The checks' results belong to that run, so none
is reset by it; later evaluations (an export's, a run-status sensor's, Execute on one check)
come after it and show until the next health run.

The health assets stay external (nothing in the UI materializes them): the export group's
"Materialize all" keeps offering the live export's five partitions and nothing else.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from iotswarm_pipelines import run_loggers
from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import checks, export_runs, health
from iotswarm_pipelines.export.asset_keys import LIVE_EXPORT_KEY, health_key
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.labels import OWNERS, Trigger, trigger_tags

HEALTH_CRON = "*/15 * * * *"

HEALTH_SPECS = [
    dg.AssetSpec(
        key=health_key(table),
        group_name=checks.GROUP,
        deps=[LIVE_EXPORT_KEY],
        owners=OWNERS,
        kinds={"health"},
        description=(
            f"Health of the live export of {table.name}: its checks say whether it is fresh, "
            "whether its state files are healthy, whether its last export stored everything and "
            "whether its last run succeeded. The health job records it every 15 minutes with the "
            "verdict (metadata `verdict`, `healthy`, `failed_checks`); an export of the table "
            "and the run-status sensors update its checks in between."
        ),
    )
    for table in catalogue.TABLES.values()
]


def _results(
    context: dg.AssetCheckExecutionContext, cosmos: CosmosSource, state: StateBackend
) -> Iterator[tuple[dg.AssetCheckKey, health.Outcome]]:
    """Each selected check's outcome, state health first: freshness loads the state, and a load
    rewrites a missing or corrupt main file from the backup, which would hide the damage from a
    later state health check."""
    now = utc_now()
    for key in sorted(context.selected_asset_check_keys, key=_evaluation_order):
        if key in checks.CHECKS:
            kind, table = checks.CHECKS[key]
            yield key, checks.evaluate(kind, table, cosmos, state, context.instance, now)
        else:
            yield key, export_runs.last_run(context.instance, _LAST_RUN_CHECKS[key])


_LAST_RUN_CHECKS = {export_runs.check_key(table): table for table in catalogue.TABLES.values()}


def _evaluation_order(key: dg.AssetCheckKey) -> tuple[bool, str]:
    is_state = key in checks.CHECKS and checks.CHECKS[key][0] is health.Check.STATE_HEALTH
    return not is_state, key.name


@dg.multi_asset_check(
    name="cosmos_health",
    specs=[*checks.CHECK_SPECS, *export_runs.CHECK_SPECS],
    can_subset=True,
    description="Freshness, state health, export completeness and the last run of every COSMOS "
    "table; with all four of a table's checks, records its health asset with the verdict.",
)
def cosmos_health(
    context: dg.AssetCheckExecutionContext,
    cosmos: dg.ResourceParam[CosmosSource],
    state: dg.ResourceParam[StateBackend],
) -> Iterator[dg.AssetCheckResult]:
    by_table: dict[str, dict[dg.AssetCheckKey, health.Outcome]] = {}
    for key, outcome in _results(context, cosmos, state):
        by_table.setdefault(key.asset_key.path[-1], {})[key] = outcome
    for name, outcomes in sorted(by_table.items()):
        table = catalogue.TABLES[name]
        if set(outcomes) == _TABLE_CHECKS[name]:  # Execute on one check records no verdict
            verdict = health.verdict(table, {key.name: o for key, o in outcomes.items()})
            context.op_execution_context.log_event(
                dg.AssetMaterialization(asset_key=health_key(table), metadata=verdict.metadata)
            )
        yield from (checks.check_result(key, outcome) for key, outcome in outcomes.items())


_TABLE_CHECKS = {
    name: {key for key in (*checks.CHECKS, *_LAST_RUN_CHECKS) if key.asset_key == health_key(table)}
    for name, table in catalogue.TABLES.items()
}


health_checks_job = dg.define_asset_job(
    "cosmos_health_checks",
    selection=dg.AssetSelection.checks(cosmos_health),
    # One quick step: a process of its own would cost more than the checks.
    executor_def=dg.in_process_executor,
    tags=trigger_tags(Trigger.MANUAL),
    description="Evaluates every COSMOS table's freshness, state health, export completeness "
    "and last run, and materializes each table's health asset with the verdict.",
)

health_checks_schedule = dg.ScheduleDefinition(
    name="cosmos_health_checks_every_15_minutes",
    cron_schedule=HEALTH_CRON,
    job=health_checks_job,
    execution_timezone="UTC",
    tags=trigger_tags(Trigger.SCHEDULE),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Evaluates the export's asset checks and records each table's health every 15 "
    "minutes.",
)


def execute_health_checks(
    resources: Mapping[str, Any], instance: dg.DagsterInstance | None, tags: Mapping[str, str]
) -> list[health.Outcome]:
    """Every table's checks and verdict in this process, as a run of ``cosmos_health_checks``.

    The demo runs it after its exports, so the Catalog it points to shows each health asset
    with a verdict at once rather than a dash until the schedule's first tick. Returns each
    table's verdict, in the catalogue's order.
    """
    job = dg.Definitions(
        assets=HEALTH_SPECS,
        asset_checks=[cosmos_health],
        jobs=[health_checks_job],
        resources=resources,
        loggers=run_loggers.LOGGERS,
    ).resolve_job_def(health_checks_job.name)
    result = job.execute_in_process(
        instance=instance,
        tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    by_key = {event.asset_key: event for event in result.get_asset_materialization_events()}
    verdicts = []
    for table in catalogue.TABLES.values():
        event = by_key.get(health_key(table))
        if event is None:
            verdicts.append(
                health.Outcome(False, f"{table.name}: the health run recorded no verdict")
            )
            continue
        metadata = event.materialization.metadata
        verdicts.append(
            health.Outcome(bool(metadata["healthy"].value), str(metadata["verdict"].value))
        )
    return verdicts
