"""A verify-only run of the live export: re-measure one table's freshness, export nothing.

Why it exists: the partitions page and the Catalog read ``cosmos/live_export`` by its runs, not
by its health. Dagster (1.13) shows a partition failed only when the newest run planned to
materialize it finished with FAILURE and nothing materialized it since; a runless event cannot
mark it. A table whose exports stopped (its new-rows sensor stopped, its runs never started)
has no such run: its partition stayed "materialized" while its health asset was red. So
``verify_sensor.py`` launches the live export job for that partition with ``verify_only``: the
run measures the table with the health job's own freshness rule and fails with the verdict's
line and the likely cause; the partition reads failed until the next real export of the table
materializes it. When the table is fresh by then, the run ends without materializing, and the
partition keeps the status it had.

A verify run is not an export: ``export_runs`` leaves it out of ``<table>_last_run``.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

from iotswarm_pipelines.automation_names import PREFIXES
from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import checks, health
from iotswarm_pipelines.export.state_backend import StateBackend

VERIFY_TAG = "iotswarm/verify_only"
"""``true`` on a verify-only run (the op sets it, however the run was launched)."""


def is_verify_run(tags: Mapping[str, str]) -> bool:
    return tags.get(VERIFY_TAG) == "true"


def _statuses(
    instance: dg.DagsterInstance, name: str, kind: InstigatorType
) -> set[InstigatorStatus]:
    """What the instance holds for this sensor or schedule: nothing for one never switched (it
    runs as its code says: the new-rows sensors running, the schedules stopped)."""
    return {
        state.status
        for state in instance.all_instigator_state(instigator_type=kind)
        if state.name == name
    }


def likely_cause(instance: dg.DagsterInstance, table: catalogue.Table) -> str | None:
    """Why nothing exports the table, when the instance can tell: its new-rows sensor is
    stopped and its schedule (the alternative trigger) is not running."""
    sensor = PREFIXES["sensor"] + table.name.lower()
    schedule = PREFIXES["schedule"] + table.name.lower()
    sensor_states = _statuses(instance, sensor, InstigatorType.SENSOR)
    schedule_states = _statuses(instance, schedule, InstigatorType.SCHEDULE)
    if sensor_states == {InstigatorStatus.STOPPED} and InstigatorStatus.RUNNING not in (
        schedule_states
    ):
        return (
            f"the sensor {sensor} is stopped and the schedule {schedule} is not running, so "
            f"nothing exports {table.name}: start the sensor (make sensor-start NAME={sensor}, "
            "or Automation in the UI)"
        )
    return None


def verify(
    table: catalogue.Table,
    cosmos: CosmosSource,
    state: StateBackend,
    instance: dg.DagsterInstance,
) -> health.Outcome:
    """The table's freshness by the health job's rule; when it fails, with the likely cause."""
    outcome = checks.evaluate(health.Check.FRESHNESS, table, cosmos, state, instance, utc_now())
    cause = None if outcome.passed else likely_cause(instance, table)
    if cause is None:
        return outcome
    return health.Outcome(False, f"{outcome.description}; likely cause: {cause}", outcome.metadata)
