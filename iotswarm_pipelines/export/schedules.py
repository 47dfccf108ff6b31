"""One schedule per COSMOS table on its logging cadence: the alternative to the sensors.

They start STOPPED (the sensors are the default trigger); turn a table's schedule on in the UI
and its sensor off to export on the clock instead of on new rows.
"""

from datetime import timedelta

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.assets import live_export_job, run_tags
from iotswarm_pipelines.labels import Trigger, trigger_tags


def cadence_cron(cadence: timedelta) -> str:
    """A cron string that fires once per cadence (whole minutes below an hour, or hourly)."""
    minutes = int(cadence.total_seconds() // 60)
    if minutes < 1 or (minutes < 60 and 60 % minutes) or (minutes >= 60 and minutes % 60):
        raise ValueError(f"no cron string for a cadence of {cadence}")
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = minutes // 60
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


def make_table_schedule(table: catalogue.Table) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"cosmos_every_{table.name.lower()}",
        cron_schedule=cadence_cron(table.cadence),
        job=live_export_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Exports {table.name} every {table.cadence} (alternative to its sensor).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            partition_key=table.name,
            tags={**run_tags(table), **trigger_tags(Trigger.SCHEDULE)},
        )

    return _schedule


table_schedules = [make_table_schedule(table) for table in catalogue.TABLES.values()]
