"""What the UI filters and plots on: run tags per trigger, and the swarm report's metadata."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import dagster as dg
import pytest

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export.assets import TABLE_TAG, cosmos_live_export
from iotswarm_pipelines.export.definitions import defs as export_defs
from iotswarm_pipelines.export.health_assets import health_checks_schedule
from iotswarm_pipelines.export.schedules import make_table_schedule
from iotswarm_pipelines.export.sensors import make_table_sensor
from iotswarm_pipelines.labels import TRIGGER_TAG
from iotswarm_pipelines.resources import build_resources
from iotswarm_pipelines.swarm import launch
from iotswarm_pipelines.swarm.assets import swarm_report_asset
from iotswarm_pipelines.swarm.definitions import defs as swarm_defs
from iotswarm_pipelines.swarm.ops import SWARM_TAG
from iotswarm_tests.export_fixtures import (
    SOILMET,
    recent_rows,
)


@pytest.fixture
def export_setup(tmp_path):
    url, _, resources = recent_rows(tmp_path)
    return url, resources


def repository(resources) -> dg.RepositoryDefinition:
    return dg.Definitions.merge(
        export_defs, dg.Definitions(resources=resources)
    ).get_repository_def()


def code_location() -> dg.Definitions:
    """The code location as definitions.py builds it, with resources for this test's data dir."""
    return dg.Definitions.merge(
        dg.Definitions(resources=build_resources()), export_defs, swarm_defs
    )


@pytest.mark.parametrize(
    "job", ["cosmos_live_export_job", "cosmos_history_export_job", "cosmos_health_checks"]
)
def test_a_launch_from_the_ui_is_tagged_manual(job):
    assert code_location().resolve_job_def(job).tags[TRIGGER_TAG] == "manual"


def test_a_materialization_from_the_asset_graph_gets_the_table_and_trigger_tags(export_setup):
    """The graph launches through the implicit asset job, which has no tags of ours."""
    _, resources = export_setup
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [cosmos_live_export], partition_key=SOILMET, resources=resources, instance=instance
        )
        assert result.success
        tags = instance.get_run_by_id(result.run_id).tags
    assert tags[TABLE_TAG] == SOILMET and tags[TRIGGER_TAG] == "manual"


def test_sensor_runs_carry_the_table_and_trigger_sensor(export_setup):
    _, resources = export_setup
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, resources=resources, repository_def=repository(resources)
        ) as context,
    ):
        [request] = make_table_sensor(catalogue.SOILMET_30MIN).evaluate_tick(context).run_requests
    assert request.tags[TABLE_TAG] == SOILMET and request.tags[TRIGGER_TAG] == "sensor"


def test_schedule_runs_carry_the_table_and_trigger_schedule(export_setup):
    _, resources = export_setup
    with dg.instance_for_test() as instance:
        repo = repository(resources)
        with dg.build_schedule_context(instance=instance, repository_def=repo) as context:
            [export] = (
                make_table_schedule(catalogue.SOILMET_30MIN).evaluate_tick(context).run_requests
            )
            [checks] = health_checks_schedule.evaluate_tick(context).run_requests
    assert export.tags[TABLE_TAG] == SOILMET and export.tags[TRIGGER_TAG] == "schedule"
    assert checks.tags[TRIGGER_TAG] == "schedule"
    assert health_checks_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_live_cosmos_runs_are_tagged_cli(export_setup, tmp_path):
    url, _ = export_setup
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{url}'\nobject_dir='{tmp_path / 'cli-objects'}'\n"
        f"state_dir='{tmp_path / 'cli-state'}'\nbucket_prefix='fdri/cosmos_swarm'\n"
    )
    home = tmp_path / "dagster-home"
    home.mkdir()
    assert export_cli.run([str(config), SOILMET, "--dagster-home", str(home)]) == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    assert run.tags[TABLE_TAG] == SOILMET and run.tags[TRIGGER_TAG] == "cli"


def test_iot_swarm_runs_are_tagged_with_the_session_and_cli():
    assert launch.run_tags("night") == {SWARM_TAG: "night", TRIGGER_TAG: "cli"}


def test_a_swarm_run_materializes_the_report_asset_with_numbers_to_plot():
    """A dry run (no broker): counts and rate, but no delivery numbers it cannot know."""
    settings.data_dir().mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 6, 1)
    generate(
        settings.sample_db_url(),
        start=start,
        end=start + timedelta(hours=2),
        sites=["ALIC1", "BALRD"],
        tables=[SOILMET],
    )
    name = f"iotswarm-ui-{uuid.uuid4().hex[:8]}"
    config = {"dry": True, "per_site": 2, "max_cycles": 2, "sleep_time": 0, "swarm_name": name}
    with dg.instance_for_test() as instance:
        result = (
            code_location()
            .get_job_def("swarm_job")
            .execute_in_process(
                run_config={"ops": {"plan_swarm": {"config": config}}}, instance=instance
            )
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        [record] = instance.fetch_materializations(swarm_report_asset.key, limit=10).records
    assert run.tags[SWARM_TAG] == name and run.tags[TRIGGER_TAG] == "manual"
    metadata = record.asset_materialization.metadata
    assert metadata["sent"].value == 8 and metadata["devices"].value == 4
    assert isinstance(metadata["msgs_per_s"].value, float)
    assert isinstance(metadata["seconds"].value, float)
    assert "lost" not in metadata and "delivered" not in metadata
    assert "msgs/s" in metadata["summary"].value
