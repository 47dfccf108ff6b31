"""The swarm's part of the code location (resources come from ``iotswarm_pipelines.resources``)."""

import dagster as dg

from iotswarm_pipelines.swarm.assets import swarm_delivery, swarm_report_asset
from iotswarm_pipelines.swarm.jobs import swarm_job

defs = dg.Definitions(assets=[swarm_report_asset], asset_checks=[swarm_delivery], jobs=[swarm_job])
