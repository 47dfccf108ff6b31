"""The code location: every asset, job, sensor and schedule, with resources for the deployment."""

import dagster as dg

from iotswarm_pipelines.export import definitions as export
from iotswarm_pipelines.resources import build_resources
from iotswarm_pipelines.swarm import definitions as swarm

defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources()),
    export.defs,
    swarm.defs,
)
