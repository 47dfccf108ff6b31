"""Which executor runs the steps: chosen by ``IOTSWARM_EXECUTOR``, never by editing code.

* ``multiprocess`` (default): the swarm's shards run as processes on the run worker's machine;
  an export run (one step) runs inside its run worker.
* ``celery``: every step is a task on a Celery queue, run by whichever worker takes it, on any
  machine that reaches the instance (PostgreSQL) and the step outputs (a shared folder, or S3
  with ``IOTSWARM_IO_URI``; see README, "Scaling out").
* ``k8s``: every step is a Kubernetes Job from the deployment's image (``deploy/``).

The executor's own settings (broker URL, namespace, ...) stay run config, with defaults that
work here: Celery's broker, result backend and queue come from ``IOTSWARM_CELERY_BROKER``,
``IOTSWARM_CELERY_BACKEND`` and ``IOTSWARM_CELERY_QUEUE`` when a launch does not set them. They
are read when a run starts, not when the code loads, so a password in a broker URL never reaches
the job's snapshot or the UI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

MULTIPROCESS = "multiprocess"
CELERY = "celery"
K8S = "k8s"
EXECUTORS = (MULTIPROCESS, CELERY, K8S)

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "dagster"  # dagster-celery's own default, so its docs and tools apply


def selected() -> str:
    """The executor named by ``IOTSWARM_EXECUTOR``; a typo fails the code location's load."""
    value = os.environ.get("IOTSWARM_EXECUTOR", MULTIPROCESS).strip().lower()
    if value not in EXECUTORS:
        raise ValueError(
            f"IOTSWARM_EXECUTOR={value!r} is not an executor: set it to one of {EXECUTORS}"
        )
    return value


def swarm_executor() -> dg.ExecutorDefinition:
    """The swarm job's executor: shards fan out over processes, Celery workers or pods.

    Locally it is Dagster's default, so run config keeps its ``multiprocess:`` /
    ``in_process:`` choice.
    """
    return _distributed() or dg.multi_or_in_process_executor


def export_executor() -> dg.ExecutorDefinition:
    """An export run has one step: locally it runs in the run worker, saving a process start."""
    return _distributed() or dg.in_process_executor


@dataclass(frozen=True)
class CeleryTarget:
    """Where steps are queued and results kept: the run worker and the Celery workers agree."""

    broker: str
    backend: str
    queue: str


def celery_target(broker: str | None = None) -> CeleryTarget:
    """The environment's broker, result backend and queue; Redis on loopback by default.

    ``broker``, a run's own, takes the environment's place, and is then its backend too unless
    ``IOTSWARM_CELERY_BACKEND`` names one.
    """
    broker = broker or os.environ.get("IOTSWARM_CELERY_BROKER") or LOCAL_REDIS
    return CeleryTarget(
        broker=broker,
        backend=os.environ.get("IOTSWARM_CELERY_BACKEND") or broker,
        queue=os.environ.get("IOTSWARM_CELERY_QUEUE") or DEFAULT_QUEUE,
    )


def _distributed() -> dg.ExecutorDefinition | None:
    name = selected()
    if name == CELERY:
        return _celery_executor()
    if name == K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None


def _celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor, with the broker, backend and queue the environment names.

    Its schema is dagster-celery's, except that ``backend`` has no default of its own (theirs,
    ``rpc://``, is made for RabbitMQ), so the environment's applies; run config still overrides
    every setting for one run.
    """
    from dagster_celery import celery_executor
    from dagster_celery.executor import CELERY_CONFIG

    schema = {
        **CELERY_CONFIG,
        "broker": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Celery broker URL. Default: $IOTSWARM_CELERY_BROKER or local Redis.",
        ),
        "backend": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Celery result backend. Default: $IOTSWARM_CELERY_BACKEND or the broker.",
        ),
    }

    @dg.executor(
        name=celery_executor.name,
        config_schema=schema,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def celery_with_defaults(context: dg.InitExecutorContext) -> dg.Executor:
        config: dict[str, Any] = dict(context.executor_config)
        target = celery_target(config.get("broker"))
        config["broker"] = target.broker
        config["backend"] = config.get("backend") or target.backend
        config["config_source"] = {
            "task_default_queue": target.queue,
            **(config.get("config_source") or {}),
        }
        return celery_executor.executor_creation_fn(  # type: ignore[misc]
            dg.InitExecutorContext(
                job=context.job,
                executor_def=celery_executor,
                executor_config=config,
                instance=context.instance,
            )
        )

    return celery_with_defaults
