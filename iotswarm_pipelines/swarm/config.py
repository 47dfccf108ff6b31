"""The swarm job's Dagster config: the run options of ``swarm.options``, shown in the launchpad."""

import dagster as dg
from pydantic import Field

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.swarm.options import SwarmOptions


class SwarmConfig(dg.Config, SwarmOptions):
    """Options of one swarm run; see the README's "MQTT device swarm" section."""

    # A choice of the catalogue's tables in the launchpad rather than free text. The command
    # line resolves the older spellings (LEVEL_1_...) to these names before it builds this.
    table: catalogue.TableName = Field(
        default=catalogue.TableName(catalogue.SOILMET_30MIN.name),
        description="COSMOS table.",
    )
