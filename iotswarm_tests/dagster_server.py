"""A real dagster-webserver and dagster-daemon on a temporary instance, and a GraphQL client.

The webserver starts first so the test can switch every sensor off before the daemon's first
tick: a sensor run launched beside the test's own runs would make what they assert depend on
timing. The processes run in their own session and are killed as a group afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iotswarm_tests.services import free_port, wait_until

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "iotswarm_pipelines.definitions"
REPOSITORY = "__repository__"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


class GraphQLError(RuntimeError):
    """The webserver answered with GraphQL errors or an error union member."""


@dataclass(frozen=True)
class DagsterServer:
    url: str
    home: Path
    """The instance's DAGSTER_HOME: commands given it record their runs where the UI reads."""

    @property
    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

    def query(self, text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise GraphQLError(json.dumps(answer["errors"])[:2000])
        return answer["data"]

    def answer(self, text: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
        """One top-level field of a query or mutation, which must not be an error member."""
        result = self.query(text, variables)[field]
        _raise_for_error(result)
        return result

    def launch_run(self, job: str, run_config: dict[str, Any]) -> str:
        """Launch a job of the code location as the Launchpad does; returns the run ID."""
        selector = {**self.repository_selector, "jobName": job}
        params = {"selector": selector, "runConfigData": run_config}
        return self.answer(LAUNCH_RUN, {"params": params}, "launchRun")["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.answer(RUN_QUERY, {"runId": run_id}, "runOrError")

    def launch_backfill(self, partition_set: str, partition_names: list[str]) -> str:
        """Backfill partitions of a job's partition set, as the UI does; returns its ID."""
        selector = {
            "partitionSetName": partition_set,
            "repositorySelector": self.repository_selector,
        }
        params = {"selector": selector, "partitionNames": partition_names}
        return self.answer(LAUNCH_BACKFILL, {"params": params}, "launchPartitionBackfill")[
            "backfillId"
        ]

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict[str, Any]:
        """Poll a backfill until it is done (bounded); returns its status and runs."""

        def backfill() -> dict[str, Any]:
            return self.answer(BACKFILL, {"id": backfill_id}, "partitionBackfillOrError")

        wait_until(lambda: backfill()["status"] in BACKFILL_DONE, timeout, "backfill", 1)
        return backfill()

    def wait_for_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll a run until it finishes (bounded); returns its status and tags."""
        wait_until(
            lambda: self.run(run_id)["status"] in FINISHED, timeout, f"run {run_id}", interval=1
        )
        return self.run(run_id)


RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
}
"""


LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
    ... on Error { message }
  }
}
"""

BACKFILL_DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""


def _raise_for_error(result: dict[str, Any]) -> None:
    kind = result.get("__typename", "")
    if "message" in result or "errors" in result or kind.endswith(("Error", "Invalid")):
        detail = result.get("message") or result.get("errors")
        raise GraphQLError(f"{kind}: {detail}")


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own session; the whole group is stopped afterwards, killed if it hangs."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group, then SIGKILL what is left (run workers, code servers) or hangs."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _location_loaded(server: DagsterServer, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"dagster-webserver exited with code {proc.returncode}")
    try:
        data = server.query(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }"
        )
    except (urllib.error.URLError, OSError):
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    for entry in entries:
        if entry["loadStatus"] == "LOADED":
            kind = entry["locationOrLoadError"]["__typename"]
            if kind != "RepositoryLocation":
                raise RuntimeError(f"code location {entry['name']} failed to load: {kind}")
            return True
    return False


SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    ... on Sensors { results { name sensorState { id status } } }
    ... on PythonError { message }
  }
}
"""

STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""


def stop_all_sensors(server: DagsterServer) -> None:
    """Switch every sensor of the code location off, as the UI's toggle does."""
    selector = {"selector": server.repository_selector}
    for sensor in server.answer(SENSORS_QUERY, selector, "sensorsOrError")["results"]:
        result = server.answer(STOP_SENSOR, {"id": sensor["sensorState"]["id"]}, "stopSensor")
        assert result["instigationState"]["status"] == "STOPPED", sensor["name"]


@contextmanager
def local_deployment(data_dir: Path) -> Iterator[None]:
    """The environment of a local code location over a fresh ``data_dir`` (created), restored
    afterwards: the webserver, the daemon and their runs inherit it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IOTSWARM_DATA_DIR", str(data_dir))
        env.setenv("IOTSWARM_DEPLOYMENT", "local")
        env.setenv("IOTSWARM_EXECUTOR", "multiprocess")
        env.delenv("DAGSTER_HOME", raising=False)
        data_dir.mkdir(parents=True)
        yield


@contextmanager
def dagster_server(
    home: Path, env: dict[str, str], timeout: float = 180, *, read_only: bool = False
) -> Iterator[DagsterServer]:
    """Webserver and daemon on ``home`` (which holds a copy of the project's dagster.yaml).

    Sensors are stopped before the daemon starts; schedules start stopped by definition.
    ``read_only`` starts the everyone-facing webserver of docs/deploying.md instead: no daemon,
    nothing switched.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {**env, "DAGSTER_HOME": str(home)}
    port = free_port()
    server = DagsterServer(f"http://127.0.0.1:{port}", home)
    webserver = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    daemon = [str(BIN / "dagster-daemon"), "run"]
    workspace = ["-w", str(PROJECT / "workspace.yaml")]
    with ExitStack() as stack:
        log = home / ("webserver-read-only.log" if read_only else "webserver.log")
        flags = ["--read-only"] if read_only else []
        web = stack.enter_context(_process(webserver + flags + workspace, env, log))
        wait_until(lambda: _location_loaded(server, web), timeout, "dagster-webserver", 0.5)
        if read_only:
            yield server
            return
        stop_all_sensors(server)
        server.query("mutation { setNuxSeen }")  # no newsletter pop-up over the screenshots
        stack.enter_context(_process(daemon + workspace, env, home / "daemon.log"))
        yield server
