"""One sensor per COSMOS table: request the table's export when the source has newer rows.

Sensors are the default trigger (RUNNING when the code location loads); the schedules in
``schedules.py`` are the alternative and start STOPPED, so the two never both fire by default.
"""

import json
from datetime import datetime, timedelta

import dagster as dg

from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.assets import live_export_job, run_tags
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.file_options import DEFAULT_FALLBACK_HOURS
from iotswarm_pipelines.labels import Trigger, trigger_tags

MAX_INTERVAL = timedelta(minutes=5)


def sensor_interval(table: catalogue.Table) -> int:
    """Check as often as the table logs, but at least every 5 minutes.

    Rows land some time after their period ends, so a 30-minute table checked only every 30
    minutes could wait almost an hour; 5 minutes bounds that for the slow tables.
    """
    return int(min(table.cadence, MAX_INTERVAL).total_seconds())


def pending_sites(
    newest: dict[str, datetime], state: dict, now: datetime, fallback_hours: float
) -> dict[str, datetime]:
    """Sites with rows the next export would send: newer than the watermark (or the fallback)."""
    fallback = state_rules.fallback_start(now, fallback_hours)
    return {
        site: when
        for site, when in newest.items()
        if when > state_rules.export_start(state, site, fallback)
    }


def make_table_sensor(table: catalogue.Table) -> dg.SensorDefinition:
    """The new-rows sensor of one table; its cursor is the newest time it already requested."""

    @dg.sensor(
        name=f"cosmos_new_rows_{table.name.lower()}",
        job=live_export_job,
        minimum_interval_seconds=sensor_interval(table),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Exports {table.name} when the source has rows newer than a site's watermark.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        cosmos: dg.ResourceParam[CosmosSource],
        state: dg.ResourceParam[StateBackend],
    ) -> dg.SensorResult | dg.SkipReason:
        newest_times = cosmos.newest_times(table)
        current = state.load(table)
        pending = pending_sites(newest_times, current, utc_now(), DEFAULT_FALLBACK_HOURS)
        if not pending:
            return dg.SkipReason(f"{table.name}: no rows newer than the watermarks")
        newest = max(pending.values())
        seen = json.loads(context.cursor)["newest"] if context.cursor else None
        if seen is not None and newest <= datetime.fromisoformat(seen):
            return dg.SkipReason(f"{table.name}: a run for rows up to {seen} was already requested")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{table.name}:{newest.isoformat()}",
                    partition_key=table.name,
                    tags={**run_tags(table), **trigger_tags(Trigger.SENSOR)},
                )
            ],
            cursor=json.dumps({"newest": newest.isoformat()}),
        )

    return _sensor


table_sensors = [make_table_sensor(table) for table in catalogue.TABLES.values()]
