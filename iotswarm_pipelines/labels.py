"""Labels the UI shows and filters on that every part of the project shares.

The asset owners, and the run tag that says what launched a run. The table (``iotswarm/table``,
export runs) and swarm session (``iotswarm/swarm``, swarm runs) tags live beside the code that
sets them.
"""

from enum import StrEnum

OWNERS = ["team:fdri-cosmos"]
"""Owners of every asset (the UI's owner filter)."""

TRIGGER_TAG = "iotswarm/trigger"


class Trigger(StrEnum):
    """What launched a run; the value of ``iotswarm/trigger``."""

    SENSOR = "sensor"
    SCHEDULE = "schedule"
    CLI = "cli"
    MANUAL = "manual"
    """The job's default: a launch from the UI's launchpad or a backfill (which Dagster also
    tags ``dagster/backfill``). Runs started by the asset graph's Materialize button run
    Dagster's implicit asset job and carry no trigger tag at all."""


def trigger_tags(trigger: Trigger) -> dict[str, str]:
    return {TRIGGER_TAG: trigger.value}
