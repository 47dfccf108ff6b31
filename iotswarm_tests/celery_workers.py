"""Real Celery worker processes for the tests and benchmarks, on a queue of their own.

Each group listens on a queue named for it alone, so test sessions sharing one Redis never take
each other's steps; the executor sends a run's steps there through ``IOTSWARM_CELERY_QUEUE``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil

from iotswarm_tests.services import wait_until
from iotswarm_tests.share_nothing import FOLDERS

STOP_TIMEOUT = 60


# Mounted over by a private tmpfs in an isolated worker's mount namespace: what the worker
# writes there (its folders, temporary files, POSIX semaphores) neither the host nor the other
# worker sees, and it sees none of theirs.
PRIVATE_MOUNTS = ("/tmp", "/var/tmp", "/dev/shm")
# The checkout (code and venv) the workers run from; a checkout under /tmp is put back over the
# private tmpfs, as every other host folder stays visible.
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Worker:
    name: str  # the Celery node name, e.g. "w1-iotswarm-test-1a2b3c4d@host"
    process: subprocess.Popen
    log: Path  # as the worker sees it
    private: Path | None = None  # an isolated worker's own folder, as it sees it

    def view(self, path: Path) -> Path:
        """``path`` as the worker sees it, reached from the host (its mount namespace)."""
        if self.private is None:
            return path
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this worker or one of its pool processes."""
        return pid == self.process.pid or any(
            child.pid == pid for child in psutil.Process(self.process.pid).children(recursive=True)
        )


@dataclass(frozen=True)
class WorkerGroup:
    queue: str
    env: dict[str, str]  # the environment of the workers, for the runs that use them
    workers: list[Worker]

    def worker_of(self, pid: int) -> Worker | None:
        return next((w for w in self.workers if w.owns(pid)), None)


@contextmanager
def celery_workers(
    count: int,
    concurrency: int,
    env: dict[str, str],
    logs: Path,
    isolated_in: Path | None = None,
    own_env: Sequence[dict[str, str]] = (),
) -> Iterator[WorkerGroup]:
    """``count`` workers of ``iotswarm_pipelines.celery_worker``, stopped (warm) on exit.

    With ``isolated_in`` (a folder under one of ``PRIVATE_MOUNTS``) each worker runs in a mount
    namespace of its own (``unshare --mount``, root only) with a private tmpfs over each of
    ``PRIVATE_MOUNTS``, and ``isolated_in/w<i>`` inside it as its working directory, home,
    ``TMPDIR``, ``DAGSTER_HOME`` and ``IOTSWARM_DATA_DIR``: like a host of its own that shares
    only the network. Its log is then inside that folder too. ``own_env[i]`` is added to the
    environment of worker ``i + 1`` only (a host's own settings).
    """
    queue = f"iotswarm-test-{uuid.uuid4().hex[:8]}"
    env = {**env, "IOTSWARM_EXECUTOR": "celery", "IOTSWARM_CELERY_QUEUE": queue}
    celery = str(Path(sys.executable).with_name("celery"))
    logs.mkdir(parents=True, exist_ok=True)
    workers: list[Worker] = []
    try:
        for i in range(1, count + 1):
            name = f"w{i}-{queue}@%h"
            private = isolated_in / f"w{i}" if isolated_in else None
            log = (private or logs) / f"w{i}.log"
            command = [celery, "-A", "iotswarm_pipelines.celery_worker", "worker", "-n", name]
            command += ["-Q", queue, "--concurrency", str(concurrency), "--prefetch-multiplier=1"]
            command += ["--without-gossip", "--without-mingle", "-l", "INFO", "-f", str(log)]
            worker_env = {**env, **(own_env[i - 1] if i <= len(own_env) else {})}
            if private:
                command, worker_env = _isolated(command, worker_env, private)
            with (logs / f"w{i}.out").open("wb") as out:  # start-up errors, warnings
                process = subprocess.Popen(command, env=worker_env, stdout=out, stderr=out)
            workers.append(Worker(name.replace("%h", _hostname()), process, log, private))
        for worker in workers:
            wait_until(lambda w=worker: _ready(w, logs), 60, f"Celery worker {worker.name}", 0.2)
        yield WorkerGroup(queue, env, workers)
    finally:
        _stop(workers)


def _isolated(
    command: list[str], env: dict[str, str], private: Path
) -> tuple[list[str], dict[str, str]]:
    """``command`` in a new mount namespace over private tmpfs mounts, with ``private`` as its
    working directory, home, temporary folder, Dagster home and data folder."""
    folders = {name: private / name for name in FOLDERS}
    mounts = [f"mount -t tmpfs -o mode=0700 private {m}" for m in PRIVATE_MOUNTS]
    if any(CHECKOUT.is_relative_to(m) for m in PRIVATE_MOUNTS):
        checkout = shlex.quote(str(CHECKOUT))
        mounts = [
            f"mount --bind {checkout} /mnt",  # /mnt: this namespace's own, to carry it across
            *mounts,
            f"mkdir -p {checkout}",
            f"mount --bind /mnt {checkout}",
        ]
    script = (
        f"{' && '.join(mounts)} && mkdir -p {' '.join(str(f) for f in folders.values())} "
        f'&& cd {folders["work"]} && exec "$@"'
    )
    env = {
        **env,
        "HOME": str(folders["home"]),
        "TMPDIR": str(folders["tmp"]),
        "DAGSTER_HOME": str(folders["dagster_home"]),
        "IOTSWARM_DATA_DIR": str(folders["data"]),
    }
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "isolated"]
    return wrapper + command, env


def _hostname() -> str:
    from celery.utils.nodenames import gethostname

    return gethostname()


def _ready(worker: Worker, logs: Path) -> bool:
    log = worker.view(worker.log)
    if worker.process.poll() is not None:
        output = logs / f"{worker.log.stem}.out"
        raise RuntimeError(f"Celery worker {worker.name} exited; see {output} and {log}")
    return log.exists() and " ready." in log.read_text()


def _stop(workers: list[Worker]) -> None:
    """Warm shutdown of every worker, then a check that none of their pool processes remain."""
    family = []
    for worker in workers:
        if worker.process.poll() is None:
            family += psutil.Process(worker.process.pid).children(recursive=True)
            worker.process.terminate()
    for worker in workers:
        try:
            worker.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT)
    for process in alive:
        process.kill()
    if alive:
        raise RuntimeError(f"Celery pool processes outlived their workers: {alive}")


def execute(
    env: dict[str, str],
    job: str,
    config: dict | None = None,
    tags: dict | None = None,
    *,
    cwd: Path | None = None,
    check: bool = True,
):
    """Run ``job`` of the code location to its end as an operator would (``dagster job execute``).

    The executor is chosen when the code loads, from ``env``, so the launch is a process of its
    own; returns the run and its Dagster events from the instance in ``env["DAGSTER_HOME"]``
    (raises when the run failed, unless ``check`` is false).
    """
    home = Path(env["DAGSTER_HOME"])
    command = [str(Path(sys.executable).with_name("dagster")), "job", "execute"]
    command += ["-m", "iotswarm_pipelines.definitions", "-j", job]
    if config:
        path = home / f"run-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(config))
        command += ["-c", str(path)]
    if tags:
        command += ["--tags", json.dumps(tags)]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=job, tags=tags or {}), limit=1)
        if not runs:
            raise RuntimeError(f"{job} made no run: {done.stderr[-2000:]}")
        [run] = runs
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event]
    if check and done.returncode != 0:
        raise RuntimeError(f"{job} failed: {done.stderr[-2000:]}")
    return run, events


def run_env(root: Path) -> dict[str, str]:
    """The environment runs and their workers share: one persistent instance, one data folder.

    The instance (``root/dagster_home``) keeps Dagster's default local storage, runs, events and
    the filesystem IO manager's outputs included, which every process on this machine reaches.
    """
    home, data = root / "dagster_home", root / "iotswarm-data"
    home.mkdir(parents=True)
    data.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(home), "IOTSWARM_DATA_DIR": str(data)}
