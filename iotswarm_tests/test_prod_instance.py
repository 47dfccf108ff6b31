"""The production instance (deploy/dagster.prod.yaml) on the real PostgreSQL server.

The file is loaded as a deployment loads it: copied to ``$DAGSTER_HOME/dagster.yaml`` with the
connection in ``DAGSTER_PG_*``. The live export runs through the real job and the table sensors
tick through the daemon's own code path, so runs, events, ticks and cursors land in PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.sensor import execute_sensor_iteration
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import definitions as export
from iotswarm_pipelines.export.assets import (
    TABLE_TAG,
    cosmos_live_export,
    live_export_job,
    run_tags,
)
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.resources import build_resources
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows
from iotswarm_tests.services import terminate_other_backends

ROOT = Path(__file__).resolve().parents[1]
PROD_YAML = ROOT / "deploy" / "dagster.prod.yaml"
SOILMET_SENSOR = f"cosmos_new_rows_{SOILMET.lower()}"


def code_location_live_export_job() -> dg.JobDefinition:
    """The live export job with the local deployment's resources, built when the run starts."""
    located = dg.Definitions.merge(export.defs, dg.Definitions(resources=build_resources()))
    return located.resolve_job_def(live_export_job.name)


@pytest.fixture
def prod_instance(pg_url, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """The production instance file in a fresh DAGSTER_HOME, on a fresh PostgreSQL database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROD_YAML, home / "dagster.yaml")
    url = sa.engine.make_url(pg_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in {
        "DAGSTER_PG_HOST": url.host,
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username,
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database,
    }.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        yield instance
    # Disposing the instance closes its storages' pools: nothing is left holding the database.
    assert terminate_other_backends(pg_url) == 0, "the disposed instance left connections open"


@pytest.fixture
def sample_rows() -> str:
    """Two recent SOILMET rows of one site in the local deployment's database; the rest empty."""
    url = settings.sample_db_url()
    settings.data_dir().mkdir(parents=True, exist_ok=True)
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    for table in catalogue.TABLE_NAMES:
        insert_rows(url, table, [])
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", [recent, recent + timedelta(minutes=30)]))
    return (recent + timedelta(minutes=30)).isoformat()


def sensor_tick(instance: dg.DagsterInstance) -> None:
    """One iteration of the sensor daemon over the code location, loaded in this process."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            python_file=str(ROOT / "iotswarm_pipelines" / "definitions.py"),
            attribute="defs",
            working_directory=str(ROOT),
        ),
        location_name="iotswarm_pipelines",
    )
    with WorkspaceProcessContext(
        instance, InProcessTestWorkspaceLoadTarget(origin)
    ) as workspace_context:
        list(execute_sensor_iteration(workspace_context, logging.getLogger("test"), None, None))


def soilmet_ticks(instance: dg.DagsterInstance):
    [state] = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.instigator_name == SOILMET_SENSOR
    ]
    return state, instance.get_ticks(state.instigator_origin_id, state.selector_id)


def table_counts(pg_url: str) -> dict[str, int]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return {
                table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("runs", "event_logs", "job_ticks", "instigators")
            }
    finally:
        engine.dispose()


def test_prod_instance_keeps_runs_events_and_schedules_in_postgres(prod_instance):
    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(prod_instance.schedule_storage, PostgresScheduleStorage)
    assert prod_instance.run_monitoring_enabled and prod_instance.run_retries_enabled
    assert prod_instance.run_retries_max_retries == 1
    queue = prod_instance.get_concurrency_config().run_queue_config
    assert {limit["key"] for limit in queue.tag_concurrency_limits} >= {TABLE_TAG}


def test_run_queue_limits_are_the_same_as_the_root_instance():
    prod = yaml.safe_load(PROD_YAML.read_text())
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert prod["concurrency"] == local["concurrency"]


# Dagster's own snapshot of our schedules reads a deprecated property; not our code.
@pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars`")
def test_sensor_tick_and_export_run_are_recorded_in_postgres(prod_instance, sample_rows, pg_url):
    sensor_tick(prod_instance)
    state, [tick] = soilmet_ticks(prod_instance)
    assert tick.status == TickStatus.SUCCESS
    assert json.loads(state.instigator_data.cursor) == {"newest": sample_rows}
    [queued] = prod_instance.get_runs(dg.RunsFilter(tags={TABLE_TAG: SOILMET}))
    assert queued.status == dg.DagsterRunStatus.QUEUED  # the queue holds it for the daemon

    with dg.execute_job(
        dg.reconstructable(code_location_live_export_job),
        prod_instance,
        tags={**run_tags(catalogue.SOILMET_30MIN), "dagster/partition": SOILMET},
    ) as result:
        assert result.success
        [materialization] = result.asset_materializations_for_node(cosmos_live_export.op.name)
    assert materialization.metadata["objects"].value == 2
    stored = prod_instance.get_run_by_id(result.run_id)
    assert stored.status == dg.DagsterRunStatus.SUCCESS

    # The next tick, once the sensor's interval has passed (the daemon's clock moved, no sleep):
    # the export advanced the watermark, so there is nothing new to request.
    with freeze_time(datetime.now(UTC) + timedelta(minutes=6)):
        sensor_tick(prod_instance)
    _, ticks = soilmet_ticks(prod_instance)
    assert [t.status for t in ticks] == [TickStatus.SKIPPED, TickStatus.SUCCESS]
    assert "no rows newer" in ticks[0].skip_reason

    counts = table_counts(pg_url)
    assert counts["runs"] == 2
    assert counts["event_logs"] > 0
    assert counts["job_ticks"] >= 2 * len(catalogue.TABLE_NAMES)
    assert counts["instigators"] >= len(catalogue.TABLE_NAMES)
