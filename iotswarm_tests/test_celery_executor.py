"""The swarm and the export on Celery: two real worker processes, Redis, Mosquitto, SQLite.

Runs are launched as an operator launches them, ``dagster job execute`` on the code location
with ``IOTSWARM_EXECUTOR=celery`` and nothing else changed; the executor is chosen when the code
loads, so the launch is a process of its own. Workers and the launch share one persistent
instance (a temporary DAGSTER_HOME), whose filesystem IO manager moves the steps' outputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines import executors
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests.celery_workers import WorkerGroup, celery_workers, execute, run_env
from iotswarm_tests.export_fixtures import local_store
from iotswarm_tests.services import require_tcp

SOILMET = "LEVEL1_SOILMET_30MIN"
SITES = ["ALIC1", "BALRD", "BICKL"]
SAMPLE_HOURS = 2  # under the export's 3-hour fallback from any time in the hour after `end`


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[WorkerGroup]:
    """Two workers of two processes each, with a sample database of the last few hours."""
    require_tcp("Redis", "127.0.0.1", 6379)
    root = tmp_path_factory.mktemp("celery")
    env = run_env(root)
    data = Path(env["IOTSWARM_DATA_DIR"])
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    generate(
        f"sqlite:///{data / 'cosmos.sqlite'}",
        start=end - timedelta(hours=SAMPLE_HOURS),
        end=end,
        sites=SITES,
        tables=[SOILMET],
    )
    with celery_workers(2, concurrency=2, env=env, logs=root / "logs") as group:
        yield group


def output_metadata(events, step_key: str) -> dict:
    [output] = [e for e in events if e.is_successful_output and e.step_key == step_key]
    return {name: value.value for name, value in output.event_specific_data.metadata.items()}


def celery_node_of(events, step_key: str) -> str:
    """The worker dagster-celery reports for the step ("Executing steps ... in celery worker")."""
    [node] = [
        e.engine_event_data.metadata["Celery worker"].value
        for e in events
        if e.is_engine_event
        and e.step_key == step_key
        and "Celery worker" in e.engine_event_data.metadata
    ]
    return node


def test_swarm_shards_run_on_both_workers_and_deliver_every_message(workers, mqtt_broker):
    name = f"iotswarm-celery-{uuid.uuid4().hex[:8]}"
    config = {
        "mode": "loop",
        "per_site": 4,
        "shards": 4,
        "max_cycles": 3,
        "sleep_time": 1.0,  # shards last long enough that one worker cannot take them all
        "qos": 1,
        "verify": True,
        "swarm_name": name,
        "mqtt_prefix": name,
    }
    run, entries = execute(workers.env, "swarm_job", {"ops": {"plan_swarm": {"config": config}}})
    events = [e.dagster_event for e in entries]

    assert run.status == dg.DagsterRunStatus.SUCCESS
    report = output_metadata(events, "swarm_report")
    assert report["devices"] == 12
    assert report["sent"] == report["delivered"] == report["acknowledged"] == 36
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["failed"] == 0
    ran_on = {}
    for shard in range(4):
        step = f"run_shard[shard_{shard}]"
        where = output_metadata(events, step)
        worker = workers.worker_of(where["pid"])
        assert worker is not None, f"{step} ran in pid {where['pid']}, not in a test worker"
        assert worker.name == celery_node_of(events, step)
        ran_on[step] = worker.name
    assert len(set(ran_on.values())) == 2, ran_on


def test_live_export_partition_stores_its_objects_from_a_worker(workers):
    partition = {"dagster/partition": SOILMET}
    run, entries = execute(workers.env, "cosmos_live_export_job", tags=partition)
    events = [e.dagster_event for e in entries]

    assert run.status == dg.DagsterRunStatus.SUCCESS
    [step] = {e.step_key for e in events if e.is_step_success}
    assert celery_node_of(events, step) in {w.name for w in workers.workers}
    [materialization] = [e for e in events if e.is_step_materialization]
    metadata = materialization.event_specific_data.materialization.metadata
    rows = len(SITES) * SAMPLE_HOURS * 2  # 30-minute rows
    assert metadata["rows_read"].value == rows
    assert metadata["objects"].value > 0 and metadata["failed"].value == 0
    stored = local_store(Path(workers.env["IOTSWARM_DATA_DIR"])).list_keys()
    assert len(stored) == metadata["objects"].value


def test_celery_target_is_local_redis_unless_the_environment_names_another(monkeypatch):
    for name in ("IOTSWARM_CELERY_BROKER", "IOTSWARM_CELERY_BACKEND", "IOTSWARM_CELERY_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    assert executors.celery_target() == executors.CeleryTarget(
        "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "dagster"
    )
    monkeypatch.setenv("IOTSWARM_CELERY_BROKER", "redis://broker.example:6379/2")
    monkeypatch.setenv("IOTSWARM_CELERY_QUEUE", "swarm")
    assert executors.celery_target() == executors.CeleryTarget(
        "redis://broker.example:6379/2", "redis://broker.example:6379/2", "swarm"
    )


@dg.job
def empty_job() -> None:
    """Only a job to initialise an executor for."""


def celery_executor_for(run_config: dict):
    """The executor a run with this ``execution.config`` gets (dagster-celery's CeleryExecutor)."""
    executor = executors.swarm_executor()
    with dg.instance_for_test() as instance:
        return executor.executor_creation_fn(
            dg.InitExecutorContext(
                job=dg.reconstructable(empty_job),
                executor_def=executor,
                executor_config={"retries": {"enabled": {}}, **run_config},
                instance=instance,
            )
        )


def test_run_config_overrides_the_environment_for_one_run(monkeypatch):
    monkeypatch.setenv("IOTSWARM_EXECUTOR", "celery")
    monkeypatch.setenv("IOTSWARM_CELERY_QUEUE", "swarm")
    for name in ("IOTSWARM_CELERY_BROKER", "IOTSWARM_CELERY_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    default = celery_executor_for({})
    assert (default.broker, default.backend) == ("redis://127.0.0.1:6379/0",) * 2
    assert default.config_source.task_default_queue == "swarm"
    own = celery_executor_for(
        {"broker": "redis://broker.example:6379/2", "config_source": {"task_default_queue": "q"}}
    )
    assert (own.broker, own.backend) == ("redis://broker.example:6379/2",) * 2
    assert own.config_source.task_default_queue == "q"
