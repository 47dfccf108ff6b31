"""At most one export per table at a time: the run queue's tag limits, and the state lock."""

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.test_utils import create_test_daemon_workspace_context, poll_for_finished_run
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from iotswarm_pipelines import settings
from iotswarm_pipelines.export.assets import live_export_job
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests.export_fixtures import (
    PRECIP,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    state_store,
)
from iotswarm_tests.services import wait_until

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "iotswarm_pipelines"
QUEUED = dg.DagsterRunStatus.QUEUED


def recent_rows(url: str, table: str, count: int, step: timedelta) -> None:
    start = utc_now().replace(second=0, microsecond=0) - step * count
    times = [start + step * (i + 1) for i in range(count)]
    for site in ("ALIC1", "BALRD"):
        insert_rows(url, table, make_rows(table, site, times))


def launch(workspace, table: str) -> str:
    """Launch one table partition of the live job the way the UI's launchpad does (GraphQL)."""
    from iotswarm_pipelines.definitions import defs  # the code location, with its resources

    job = defs.resolve_job_def(live_export_job.name)
    tags = job.get_tags_for_partition_key(table, selected_asset_keys=None)
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        LAUNCH_PIPELINE_EXECUTION_MUTATION,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": live_export_job.name,
                },
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        },
    )
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def dequeue(workspace) -> None:
    """One tick of the daemon that takes runs off the queue (what `dagster-daemon` runs)."""
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        list(daemon.run_iteration(workspace))


def test_two_launches_for_one_table_never_overlap():
    settings.data_dir().mkdir(parents=True)
    recent_rows(settings.sample_db_url(), SOILMET, 3, timedelta(minutes=30))
    recent_rows(settings.sample_db_url(), PRECIP, 4, timedelta(minutes=1))
    concurrency = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]
    target = ModuleTarget(LOCATION + ".definitions", "defs", str(ROOT), LOCATION)
    with (
        dg.instance_for_test(overrides={"concurrency": concurrency}) as instance,
        create_test_daemon_workspace_context(target, instance) as workspace,
    ):
        first, second = launch(workspace, SOILMET), launch(workspace, SOILMET)
        other = launch(workspace, PRECIP)
        assert {instance.get_run_by_id(r).status for r in (first, second, other)} == {QUEUED}

        dequeue(workspace)
        assert instance.get_run_by_id(first).status != QUEUED
        assert instance.get_run_by_id(second).status == QUEUED  # same table: waits
        assert instance.get_run_by_id(other).status != QUEUED  # another table runs alongside

        poll_for_finished_run(instance, first, timeout=180)
        dequeue(workspace)
        for run_id in (first, second, other):
            assert poll_for_finished_run(instance, run_id, timeout=180).is_success
        assert instance.get_run_stats(first).end_time <= instance.get_run_stats(second).start_time

    objects = local_store(settings.data_dir()).list_keys()
    assert len(objects) == 2 * 3 + 2 * 4  # every row once; the second run found nothing new


WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from iotswarm_pipelines.cosmos import catalogue
    from iotswarm_pipelines.export.pipeline import export_table
    from iotswarm_tests.export_fixtures import local_store, source, state_store
    url, folder = sys.argv[1], Path(sys.argv[2])
    print("ready", flush=True)
    summary = export_table(
        catalogue.PRECIP_1MIN, source=source(url), store=local_store(folder),
        state=state_store(folder), fallback_hours=1,
    )
    print(json.dumps({"rows": summary.rows_read}), flush=True)
    """
)


def test_the_state_lock_serialises_two_export_processes(tmp_path, cosmos_url):
    recent_rows(cosmos_url, PRECIP, 30, timedelta(minutes=1))
    state = state_store(tmp_path)
    with state.locked(PRECIP):  # both workers start while the table is locked
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, cosmos_url, str(tmp_path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for worker in workers:
            wait_until(lambda w=worker: w.stdout.readline().strip() == "ready", 120, "worker")
    rows = [json.loads(w.communicate(timeout=120)[0])["rows"] for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sorted(rows) == [0, 60]  # without the lock both would have sent all 60 rows
    assert len(local_store(tmp_path).list_keys()) == 60
