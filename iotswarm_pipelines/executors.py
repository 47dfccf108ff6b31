"""Which executor runs the steps: chosen by ``IOTSWARM_EXECUTOR``, never by editing code.

* ``multiprocess`` (default): the swarm's shards run as processes on the run worker's machine;
  an export run (one step) runs inside its run worker.
* ``celery``: every step is a task on a Celery queue, run by whichever worker takes it, on any
  machine that shares the instance's storage (see README, "Scaling out").
* ``k8s``: every step is a Kubernetes Job from the deployment's image (``deploy/``).

The executor's own settings (broker URL, namespace, ...) stay run config, with defaults that
work here: Celery's broker and backend come from ``IOTSWARM_CELERY_BROKER`` /
``IOTSWARM_CELERY_BACKEND`` when a launch does not set them.
"""

from __future__ import annotations

import os

import dagster as dg

MULTIPROCESS = "multiprocess"
CELERY = "celery"
K8S = "k8s"
EXECUTORS = (MULTIPROCESS, CELERY, K8S)


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


def _distributed() -> dg.ExecutorDefinition | None:
    name = selected()
    if name == CELERY:
        from dagster_celery import celery_executor

        return celery_executor
    if name == K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None
