"""Celery workers that share nothing but the network, on this one machine (docs/scaling-out.md).

Two workers run each in a mount namespace of its own with private tmpfs mounts over /tmp,
/var/tmp and /dev/shm, and their own working directory, home, temporary folder, DAGSTER_HOME
and IOTSWARM_DATA_DIR in there: neither sees the other's files nor the run worker's. The run
worker is ``dagster job execute`` with ``IOTSWARM_DEPLOYMENT=prod``: the instance on
PostgreSQL, the source in PostgreSQL, step outputs, export objects and state, and swarm sessions
and reports in S3 (the moto server), Celery through Redis and MQTT to Mosquitto, all by URL.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.swarm import sessions
from iotswarm_tests.celery_workers import WorkerGroup, celery_workers, execute
from iotswarm_tests.services import require_tcp, wait_until
from iotswarm_tests.share_nothing import (
    ROOT,
    fresh_database,
    make_bucket,
    prod_env,
    reader_env,
    run_worker,
    s3_client,
    sample_source,
)

SOILMET = "LEVEL1_SOILMET_30MIN"
PRECIP = "LEVEL1_PRECIP_1MIN"
SITES = ["ALIC1", "BALRD"]
SAMPLE_HOURS = 2  # under the export's 3-hour fallback from any time in the hour after `end`
# Each worker host's own local addresses for its shards' connections (loopback needs no set-up).
SOURCE_ADDRESSES = "IOTSWARM_MQTT_SOURCE_ADDRESSES"
WORKER_ADDRESSES = [("127.0.0.2",), ("127.0.0.3", "127.0.0.4")]


@dataclass(frozen=True)
class Deployment:
    env: dict[str, str]  # the run worker's (and, with their own folders, the workers')
    launcher: Path  # the run worker's own folder
    run_root: Path  # the folder the workers' private folders are in (as each sees it)
    bucket: str
    s3: object  # a boto3 client on the moto server
    workers: WorkerGroup
    started: float
    repository: set[Path]  # its files when the deployment started
    source_end: datetime  # the newest rows' DATE_TIME

    def session_store(self) -> str:
        return f"s3://{self.bucket}/sessions"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, pg_server_url, s3_endpoint, mqtt_broker) -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.fail("the share-nothing test needs root for `unshare --mount` (see README)")
    require_tcp("Redis", "127.0.0.1", 6379)
    started = time.time()
    repository = _repository_files()
    root = tmp_path_factory.mktemp("sharenothing")
    bucket = make_bucket(s3_endpoint)
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    with fresh_database(pg_server_url) as pg_url, pytest.MonkeyPatch.context() as patch:
        sample_source(pg_url, end - timedelta(hours=SAMPLE_HOURS), end, SITES, [SOILMET, PRECIP])
        env = prod_env(pg_url, s3_endpoint, bucket, mqtt_broker)
        for name, value in reader_env(env).items():
            patch.setenv(name, value)
        workers_root = root / "workers"  # exists only inside each worker's private /tmp
        with celery_workers(
            2,
            concurrency=2,
            env=env,
            logs=root / "logs",
            isolated_in=workers_root,
            own_env=[{SOURCE_ADDRESSES: ",".join(a)} for a in WORKER_ADDRESSES],
        ) as group:
            launcher = root / "run-worker"
            launcher_env = {**run_worker(launcher, env), "IOTSWARM_CELERY_QUEUE": group.queue}
            yield Deployment(
                launcher_env,
                launcher,
                workers_root,
                bucket,
                s3_client(s3_endpoint),
                group,
                started,
                repository,
                end,
            )


def _launch(deployment: Deployment, job: str, config=None, tags=None, check=True):
    run, entries = execute(
        deployment.env, job, config, tags, cwd=deployment.launcher / "work", check=check
    )
    return run, [e.dagster_event for e in entries]


def _output_metadata(events, step_key: str) -> dict:
    [output] = [e for e in events if e.is_successful_output and e.step_key == step_key]
    return {name: value.value for name, value in output.event_specific_data.metadata.items()}


def _swarm_config(name: str, **overrides) -> dict:
    config = {
        "mode": "loop",
        "per_site": 2,
        "shards": 4,
        "max_cycles": 3,
        "sleep_time": 1.0,  # shards last long enough that one worker cannot take them all
        "qos": 1,
        "verify": True,
        "swarm_name": name,
        "mqtt_prefix": name,
        "progress_interval": 0.5,
        **overrides,
    }
    return {"ops": {"plan_swarm": {"config": config}}}


def _read(deployment: Deployment, key: str) -> bytes:
    return deployment.s3.get_object(Bucket=deployment.bucket, Key=key)["Body"].read()


def _keys(deployment: Deployment, prefix: str) -> list[str]:
    pages = deployment.s3.get_paginator("list_objects_v2").paginate(
        Bucket=deployment.bucket, Prefix=prefix
    )
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_swarm_shards_spread_over_isolated_workers_through_s3(deployment):
    name = f"sn-swarm-{uuid.uuid4().hex[:8]}"
    run, events = _launch(deployment, "swarm_job", _swarm_config(name))

    assert run.status == dg.DagsterRunStatus.SUCCESS
    report = _output_metadata(events, "swarm_report")
    devices = len(SITES) * 2
    assert report["devices"] == devices
    assert report["sent"] == report["acknowledged"] == report["delivered"] == devices * 3
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["failed"] == 0
    ran_on = {}
    for shard in range(4):
        where = _output_metadata(events, f"run_shard[shard_{shard}]")
        worker = deployment.workers.worker_of(where["pid"])
        assert worker is not None, f"shard {shard} ran in pid {where['pid']}, not in a worker"
        ran_on[shard] = (worker.name, where["host"], where["pid"])
        # The shard connected from its worker's own addresses, round robin by shard number.
        addresses = WORKER_ADDRESSES[deployment.workers.workers.index(worker)]
        assert where["source_address"] == addresses[shard % len(addresses)], (shard, where)
    assert len({node for node, _, _ in ran_on.values()}) == 2, ran_on

    # Session and report from S3, as any host reads them afterwards.
    saved = json.loads(_read(deployment, f"sessions/{name}.report.json"))
    assert (saved["run_id"], saved["sent"], saved["lost"]) == (run.run_id, devices * 3, 0)
    session = sessions.load_session(name, deployment.session_store())
    assert session is not None and {p.cycles for p in session.positions.values()} == {3}
    # Step outputs went through S3, under the run's ID.
    outputs = _keys(deployment, f"steps/storage/{run.run_id}/")
    assert f"steps/storage/{run.run_id}/run_shard--shard_0/result" in outputs, outputs
    _assert_nothing_outside_private_folders(deployment, run.run_id)


def _rows_in_objects(deployment: Deployment, prefix: str) -> list[tuple]:
    """(station, fields, time) of every row in every stored payload, repeats kept."""
    rows = []
    for key in _keys(deployment, prefix):
        payload = json.loads(_read(deployment, key))
        head = payload["head"]
        fields = tuple(f["name"] for f in head["fields"])
        rows += [(head["environment"]["station_name"], fields, d["time"]) for d in payload["data"]]
    return rows


def test_two_table_backfill_stores_every_row_once_with_state_on_s3(deployment):
    # Both partitions at once, as a backfill launches them: each its own run, its step on Celery.
    with ThreadPoolExecutor(max_workers=2) as pool:
        launched = {
            table: pool.submit(
                _launch, deployment, "cosmos_live_export_job", tags={"dagster/partition": table}
            )
            for table in (SOILMET, PRECIP)
        }
    results = {}
    for table, future in launched.items():
        run, events = future.result()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        [materialization] = [e for e in events if e.is_step_materialization]
        results[table] = materialization.event_specific_data.materialization.metadata

    # Every row the source holds (the sample drops a row now and then, as a real logger does).
    expected = _source_rows(deployment, [SOILMET, PRECIP])
    assert expected > len(SITES) * SAMPLE_HOURS * (2 + 60) * 0.99
    assert sum(m["rows_read"].value for m in results.values()) == expected
    assert all(m["failed"].value == 0 for m in results.values())
    rows = _rows_in_objects(deployment, "fdri/cosmos_swarm/")
    assert len(rows) == len(set(rows)) == expected
    state = _keys(deployment, "state/")
    assert any(SOILMET in k for k in state) and any(PRECIP in k for k in state), state
    _assert_nothing_outside_private_folders(deployment)


def _source_rows(deployment: Deployment, tables: list[str]) -> int:
    engine = sa.create_engine(deployment.env["COSMOS_DB_URL"])
    try:
        with engine.connect() as conn:
            return sum(
                conn.execute(
                    sa.text(f'SELECT count(*) FROM "{catalogue.SCHEMA}"."{t}"')
                ).scalar_one()
                for t in tables
            )
    finally:
        engine.dispose()


def _event_pid(deployment: Deployment, run_id: str, step_key: str) -> int | None:
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
            if entry.dagster_event.step_key == step_key:
                return entry.dagster_event.pid
    return None


def _latest_run_id(deployment: Deployment, job: str, not_in: set[str]) -> str | None:
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=job), limit=5)
    return next((r.run_id for r in runs if r.run_id not in not_in), None)


CYCLES = 40


def test_a_killed_worker_fails_the_run_naming_its_shard_and_resume_continues(deployment):
    name = f"sn-kill-{uuid.uuid4().hex[:8]}"
    # 20 s of publishing per shard: time to see shard 2 start and kill it, even on a busy machine.
    config = _swarm_config(name, max_cycles=CYCLES, sleep_time=0.5)
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        before = {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="swarm_job"))}
    store = deployment.session_store()
    killed = "run_shard[shard_2]"
    ids: list[str] = []

    def started() -> bool:
        run_id = ids[0] if ids else _latest_run_id(deployment, "swarm_job", before)
        if run_id and not ids:
            ids.append(run_id)
        return bool(ids) and f"{name}.shard-2.json" in _shard_documents(deployment, name)

    outcome: dict = {}
    launch = threading.Thread(
        target=lambda: outcome.update(result=_launch(deployment, "swarm_job", config, check=False))
    )
    launch.start()
    try:
        wait_until(started, 300, "shard 2 publishing", 0.5)
        pid = _event_pid(deployment, ids[0], killed)
        assert pid is not None and deployment.workers.worker_of(pid) is not None
        os.kill(pid, signal.SIGKILL)
    finally:
        launch.join(timeout=300)
    run, events = outcome["result"]

    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = [e for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    error = failure.event_specific_data.error.to_string()
    # dagster-celery lists each lost step: "[run_shard[shard_2]]: WorkerLostError: ... SIGKILL"
    assert f"[{killed}]: " in error and "WorkerLostError" in error, error[-2000:]
    assert all(f"[run_shard[shard_{k}]]" not in error for k in (0, 1, 3)), error[-2000:]
    saved = sessions.load_session(name, store)
    assert saved is not None
    lost_devices = {d for d, p in saved.positions.items() if p.cycles < CYCLES}
    assert lost_devices, "the killed shard's devices stopped short of max_cycles"

    # Resume: every device continues from its saved position, none starts again.
    resumed, resumed_events = _launch(
        deployment, "swarm_job", _swarm_config(name, max_cycles=2, resume_session=True)
    )
    assert resumed.status == dg.DagsterRunStatus.SUCCESS
    report = _output_metadata(resumed_events, "swarm_report")
    assert report["lost"] == 0 and report["duplicated"] == 0
    after = sessions.load_session(name, store)
    assert after is not None
    # Loop mode sends a site's rows in order, round and round: after n messages a device stands
    # at row (n - 1) mod rows, wherever it stopped and resumed; restarted, it would be at row 1.
    end = deployment.source_end
    times = [end - timedelta(minutes=30 * k) for k in range(SAMPLE_HOURS * 2 - 1, -1, -1)]
    for device, position in saved.positions.items():
        now = after.positions[device]
        assert now.cycles == position.cycles + 2, device
        assert now.last_time == times[(now.cycles - 1) % len(times)], device
    _assert_nothing_outside_private_folders(deployment, run.run_id)


def _shard_documents(deployment: Deployment, name: str) -> list[str]:
    return [k.rsplit("/", 1)[-1] for k in _keys(deployment, f"sessions/{name}.shard-")]


def _repository_files() -> set[Path]:
    """The repository's files, but for git's, pytest's cache and the virtual environment."""
    skip = {".git", ".venv", ".pytest_cache", ".ruff_cache"}
    return {
        p
        for p in ROOT.rglob("*")
        if not skip.intersection(p.relative_to(ROOT).parts[:1]) and p.is_file()
    }


def _new_files(folder: Path, since: float) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= since
    ]


def _assert_nothing_outside_private_folders(deployment: Deployment, run_id: str | None = None):
    """The workers' files exist only in their private folders; the repository and the host's
    view of the run's folders hold none of theirs; no step output or session is on a disk."""
    host_view = deployment.run_root  # the workers' folder, as the host sees it: never made
    assert not host_view.exists(), sorted(host_view.rglob("*"))
    assert _repository_files() == deployment.repository, "a file appeared in the repository"
    for worker in deployment.workers.workers:
        assert worker.private is not None
        private = worker.view(worker.private)
        assert private.is_dir(), f"{worker.name} has no private folder {private}"
        others = [w for w in deployment.workers.workers if w is not worker]
        for other in others:  # a worker does not see the other's folder
            assert not worker.view(other.private).exists()  # type: ignore[arg-type]
        files = _new_files(private, deployment.started)
        assert not [p for p in files if "swarm_sessions" in p.parts or p.suffix == ".json"]
    launcher_files = _new_files(deployment.launcher, deployment.started)
    if run_id:
        assert not [p for p in launcher_files if run_id in str(p) and "compute_logs" not in str(p)]
    assert not [p for p in launcher_files if "swarm_sessions" in p.parts]
