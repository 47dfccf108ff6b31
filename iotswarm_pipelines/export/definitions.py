"""The live COSMOS export's assets, jobs and triggers (resources come from the top level)."""

import dagster as dg

from iotswarm_pipelines.export.assets import (
    cosmos_history_export,
    cosmos_live_export,
    history_export_job,
    live_export_job,
)
from iotswarm_pipelines.export.schedules import table_schedules
from iotswarm_pipelines.export.sensors import table_sensors

defs = dg.Definitions(
    assets=[cosmos_live_export, cosmos_history_export],
    jobs=[live_export_job, history_export_job],
    sensors=table_sensors,
    schedules=table_schedules,
)
