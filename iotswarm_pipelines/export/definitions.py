"""The live COSMOS export: assets, checks, jobs and triggers (resources come from the top)."""

import dagster as dg

from iotswarm_pipelines.export.assets import (
    cosmos_history_export,
    cosmos_live_export,
    history_export_job,
    live_export_job,
)
from iotswarm_pipelines.export.export_runs import record_failed_export, record_succeeded_export
from iotswarm_pipelines.export.health_assets import (
    HEALTH_SPECS,
    cosmos_health,
    health_checks_job,
    health_checks_schedule,
)
from iotswarm_pipelines.export.reconcile_assets import (
    cosmos_reconciliation,
    reconcile_job,
    reconcile_yesterday,
)
from iotswarm_pipelines.export.schedules import table_schedules
from iotswarm_pipelines.export.sensors import table_sensors
from iotswarm_pipelines.export.verify_sensor import verify_behind_tables

defs = dg.Definitions(
    assets=[cosmos_live_export, *HEALTH_SPECS, cosmos_history_export, cosmos_reconciliation],
    asset_checks=[cosmos_health],
    jobs=[live_export_job, history_export_job, health_checks_job, reconcile_job],
    sensors=[*table_sensors, record_failed_export, record_succeeded_export, verify_behind_tables],
    schedules=[*table_schedules, health_checks_schedule, reconcile_yesterday],
)
