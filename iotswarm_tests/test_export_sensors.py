"""The per-table sensors and schedules, evaluated against a real Dagster instance."""

import json
from datetime import timedelta

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.assets import TABLE_TAG
from iotswarm_pipelines.export.definitions import defs
from iotswarm_pipelines.export.pipeline import export_table, utc_now
from iotswarm_pipelines.export.schedules import cadence_cron, make_table_schedule
from iotswarm_pipelines.export.sensors import make_table_sensor, sensor_interval
from iotswarm_tests.export_fixtures import (
    PRECIP,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    recent_rows,
    source,
    state_store,
)


@pytest.fixture
def setup(tmp_path):
    url, recent, resources = recent_rows(tmp_path, age=timedelta(hours=1))
    return url, recent, resources, resources["object_store"]


def evaluate(instance, resources, cursor=None):
    """One tick of the SOILMET sensor as the daemon runs it (run requests resolved)."""
    sensor = make_table_sensor(catalogue.SOILMET_30MIN)
    repo = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).get_repository_def()
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, repository_def=repo
    ) as context:
        return sensor.evaluate_tick(context)


def test_new_rows_request_one_run_for_the_table_partition(setup):
    _, recent, resources, _ = setup
    with dg.instance_for_test() as instance:
        tick = evaluate(instance, resources)
        [request] = tick.run_requests
        newest = recent + timedelta(minutes=30)
        assert request.partition_key == SOILMET
        assert request.tags[TABLE_TAG] == SOILMET
        assert request.run_key == f"{SOILMET}:{newest.isoformat()}"
        assert json.loads(tick.cursor) == {"newest": newest.isoformat()}

        again = evaluate(instance, resources, cursor=tick.cursor)
        assert again.run_requests == [] and again.skip_message


def test_nothing_new_after_an_export_and_a_new_row_moves_the_cursor(setup):
    url, recent, resources, store = setup
    export_table(
        catalogue.SOILMET_30MIN, source=resources["cosmos"], store=store, state=resources["state"]
    )
    with dg.instance_for_test() as instance:
        tick = evaluate(instance, resources)
        assert tick.run_requests == []
        assert "no rows newer" in tick.skip_message

        insert_rows(url, SOILMET, make_rows(SOILMET, "BALRD", [recent + timedelta(minutes=60)]))
        tick = evaluate(instance, resources, cursor=json.dumps({"newest": recent.isoformat()}))
        assert len(tick.run_requests) == 1
        assert json.loads(tick.cursor)["newest"] == (recent + timedelta(minutes=60)).isoformat()


def test_rows_older_than_the_fallback_of_a_never_seen_site_do_not_trigger(tmp_path, cosmos_url):
    old = utc_now() - timedelta(days=30)
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "WYTH1", [old]))
    resources = {
        "cosmos": source(cosmos_url),
        "state": state_store(tmp_path),
        "object_store": local_store(tmp_path),
    }
    with dg.instance_for_test() as instance:
        assert evaluate(instance, resources).run_requests == []


def test_intervals_and_crons_follow_the_table_cadence():
    assert (
        make_table_sensor(catalogue.SOILMET_30MIN).default_status == dg.DefaultSensorStatus.RUNNING
    )
    assert sensor_interval(catalogue.get_table(PRECIP)) == 60
    assert sensor_interval(catalogue.get_table(SOILMET)) == 300
    assert cadence_cron(timedelta(minutes=1)) == "* * * * *"
    assert cadence_cron(timedelta(minutes=30)) == "*/30 * * * *"
    assert cadence_cron(timedelta(hours=1)) == "0 * * * *"
    with pytest.raises(ValueError, match="no cron"):
        cadence_cron(timedelta(minutes=7))


def test_schedule_requests_its_table_with_the_tag(setup):
    schedule = make_table_schedule(catalogue.PRECIP_1MIN)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    repo = dg.Definitions.merge(defs, dg.Definitions(resources=setup[2])).get_repository_def()
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, repository_def=repo) as context,
    ):
        data = schedule.evaluate_tick(context)
    [request] = data.run_requests
    assert request.partition_key == PRECIP and request.tags[TABLE_TAG] == PRECIP
