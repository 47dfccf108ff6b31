"""The swarm's part of the code location (resources come from ``iotswarm_pipelines.resources``)."""

import dagster as dg

from iotswarm_pipelines.swarm.jobs import swarm_job

defs = dg.Definitions(jobs=[swarm_job])
