"""The code location: every asset, job, sensor and schedule, with resources for the deployment."""

import dagster as dg

from iotswarm_pipelines import run_loggers
from iotswarm_pipelines.export import definitions as export
from iotswarm_pipelines.notify_sensor import notify_on_run_failure
from iotswarm_pipelines.resources import build_resources
from iotswarm_pipelines.swarm import definitions as swarm

defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources()),
    dg.Definitions(loggers=run_loggers.LOGGERS, sensors=[notify_on_run_failure]),
    export.defs,
    swarm.defs,
)
