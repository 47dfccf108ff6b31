"""The swarm job's Dagster config: the run options of ``swarm.options``, shown in the launchpad."""

import dagster as dg

from iotswarm_pipelines.swarm.options import SwarmOptions


class SwarmConfig(dg.Config, SwarmOptions):
    """Options of one swarm run; see the README's "MQTT device swarm" section."""
