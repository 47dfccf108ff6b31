"""The swarm job: plan, one step per shard, report."""

from __future__ import annotations

from typing import Any

import dagster as dg

from iotswarm_pipelines import executors, run_loggers
from iotswarm_pipelines.labels import Trigger, trigger_tags
from iotswarm_pipelines.swarm.ops import plan_swarm, run_shard, swarm_report


def build_swarm_job(
    resource_defs: dict[str, Any] | None = None,
    executor_def: dg.ExecutorDefinition | None = None,
    logger_defs: dict[str, dg.LoggerDefinition] | None = None,
) -> dg.JobDefinition:
    """The job, with resources from the code location (None) or given (the CLI's).

    The executor is the one ``IOTSWARM_EXECUTOR`` selects unless given: the ``iot-swarm``
    command always runs its shards as local processes, whatever the shell's setting.
    """

    @dg.job(
        name="swarm_job",
        description="Simulate COSMOS dataloggers over MQTT in shards; report delivery and latency.",
        resource_defs=resource_defs,
        executor_def=executor_def or executors.swarm_executor(),
        logger_defs=logger_defs or run_loggers.LOGGERS,
        tags={"iotswarm/area": "swarm", **trigger_tags(Trigger.MANUAL)},
    )
    def swarm_job() -> None:
        shards, spec = plan_swarm()
        swarm_report(spec, shards.map(run_shard).collect())

    return swarm_job


# Locally every shard step runs in its own process (multiprocess), with the instance's IO
# manager moving the plain data between them. Shards on other machines (Celery, Kubernetes) need
# an IO manager they all reach: a shared filesystem, or S3 (IOTSWARM_IO_URI, resources.py).
swarm_job = build_swarm_job()
