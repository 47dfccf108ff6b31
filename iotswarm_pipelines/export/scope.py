"""Which export runs describe the deployment's health: its own destination only.

``live-cosmos`` records its runs in the deployment's instance (so the UI lists them), but a
one-off run to another folder, bucket or state (a test copy, a replay elsewhere) says nothing
about the deployment's tables: judged against its health, it turned a fresh table red until the
next real export. Each command-line run is therefore tagged with its destination and its scope;
a one-off run evaluates no health check and the completeness check never reads its counts.
Runs launched by the code location (the UI, sensors, schedules, backfills) use the deployment's
own resources and carry no scope tag: they are the deployment's.
"""

from __future__ import annotations

from collections.abc import Mapping

SCOPE_TAG = "iotswarm/health_scope"
DESTINATION_TAG = "iotswarm/destination"
DEPLOYMENT = "deployment"
ONE_OFF = "one-off"
ONE_OFF_METADATA = "one_off"
"""Set (true) on the export events of a one-off run, which the completeness check skips."""


def scope_tags(run_place: str, deployment_place: str) -> dict[str, str]:
    """The tags of a command-line run writing to ``run_place`` (see ``stores.place``)."""
    return {
        DESTINATION_TAG: run_place,
        SCOPE_TAG: DEPLOYMENT if run_place == deployment_place else ONE_OFF,
    }


def is_one_off(tags: Mapping[str, str]) -> bool:
    return tags.get(SCOPE_TAG) == ONE_OFF
