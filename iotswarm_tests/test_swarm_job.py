"""The swarm job from the code location: shards in their own processes, a real Mosquitto."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

import dagster as dg
import pytest

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.labels import TRIGGER_TAG
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.assets import swarm_report_asset
from iotswarm_pipelines.swarm.launch import multiprocess_config
from iotswarm_pipelines.swarm.ops import SWARM_TAG, concurrent_steps

T0 = datetime(2024, 6, 1)
SOILMET = "LEVEL1_SOILMET_30MIN"


def code_location_swarm_job() -> dg.JobDefinition:
    """The job as the UI launches it, with the deployment's resources (local here)."""
    from iotswarm_pipelines.definitions import defs

    return defs.get_job_def("swarm_job")


@pytest.fixture
def sample_db() -> str:
    """The local deployment's sample database, in this test's own IOTSWARM_DATA_DIR."""
    settings.data_dir().mkdir(parents=True, exist_ok=True)
    url = settings.sample_db_url()
    generate(
        url,
        start=T0,
        end=T0 + timedelta(hours=4),
        sites=["ALIC1", "BALRD", "BICKL"],
        tables=[SOILMET],
    )
    return url


def test_two_shards_in_two_processes_deliver_every_message_once(sample_db, mqtt_broker):
    assert mqtt_broker == ("127.0.0.1", 1883), "the local deployment's broker is 127.0.0.1:1883"
    name = f"iotswarm-job-{uuid.uuid4().hex[:8]}"
    config = {
        "mode": "loop",
        "per_site": 4,
        "shards": 2,
        "max_cycles": 3,
        "sleep_time": 0.2,
        "qos": 1,
        "verify": True,
        "swarm_name": name,
        "mqtt_prefix": name,
        "rows_per_message": 2,
    }
    with (
        dg.instance_for_test() as instance,
        dg.execute_job(
            dg.reconstructable(code_location_swarm_job),
            instance,
            run_config={
                "ops": {"plan_swarm": {"config": config}},
                "execution": {"config": {"multiprocess": multiprocess_config(2)}},
            },
        ) as result,
    ):
        assert result.success
        report = result.output_for_node("swarm_report")
        run = instance.get_run_by_id(result.run_id)
        shard_steps = {
            e.step_key for e in result.all_events if e.is_step_success and "run_shard" in e.step_key
        }
        outputs = [
            e.event_specific_data.metadata
            for e in result.all_events
            if e.is_successful_output and e.step_key == "swarm_report"
        ]
        [materialization] = result.asset_materializations_for_node("swarm_report")
        [delivered] = result.get_asset_check_evaluations()
    assert (delivered.asset_key, delivered.check_name) == (swarm_report_asset.key, "delivery")
    assert delivered.passed
    assert shard_steps == {"run_shard[shard_0]", "run_shard[shard_1]"}
    assert report.devices == 12 and report.connections == 12
    assert report.sent == 36 and report.acknowledged == 36
    assert report.delivered == report.sent
    assert report.lost == 0 and report.duplicated == 0 and report.failed == 0
    assert report.latency_p99_ms is not None
    metadata = outputs[0]
    for key in ("devices", "sent", "delivered", "lost", "msgs_per_s", "latency_p95_ms"):
        assert isinstance(metadata[key].value, int | float), key
    assert metadata["delivered"].value == 36
    assert "msgs/s" in metadata["summary"].value
    assert run.tags[SWARM_TAG] == name and run.tags[TRIGGER_TAG] == "manual"
    assert materialization.asset_key == swarm_report_asset.key  # plotted on the asset's page
    plotted = ("sent", "delivered", "lost", "msgs_per_s", "latency_p50_ms", "latency_p99_ms")
    assert all(isinstance(materialization.metadata[k].value, int | float) for k in plotted)
    positions = sessions.load_session(name).positions
    assert len(positions) == 12 and {p.cycles for p in positions.values()} == {3}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sleep_time": -1}, "sleep_time must be at least 0, got -1"),
        ({"qos": 3}, "qos 3 is not supported: use 0 or 1"),
        ({"no_send_probability": 150}, "no_send_probability is a percentage: 0 to 100, got 150"),
        ({"sites": ["NOPE1"]}, "unknown COSMOS site 'NOPE1'"),
        ({"sites": ["WIMPL"]}, "site(s) WIMPL have no rows in LEVEL1_SOILMET_30MIN"),
        ({"mode": "rewind"}, "mode 'rewind' is unknown"),
        ({"per_site": 2, "device_id_template": "{site}"}, "gives 'ALIC1' twice"),
    ],
)
def test_bad_config_fails_the_run_with_one_clear_line(sample_db, config, message):
    result = code_location_swarm_job().execute_in_process(
        run_config={"ops": {"plan_swarm": {"config": {"dry": True, **config}}}},
        raise_on_error=False,
    )
    assert not result.success
    description = result.failure_data_for_node("plan_swarm").user_failure_data.description
    assert message in description
    assert "\n" not in description


def test_an_unknown_table_is_refused_before_the_run_starts(sample_db):
    """The launchpad offers the tables as a choice; anything else is refused as bad config."""
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type TableName"):
        code_location_swarm_job().execute_in_process(
            run_config={"ops": {"plan_swarm": {"config": {"dry": True, "table": "LEVEL1_NOPE"}}}}
        )


def test_endless_shards_that_cannot_all_run_at_once_fail_before_any_starts(sample_db):
    shards = (os.cpu_count() or 1) + 1
    result = code_location_swarm_job().execute_in_process(
        run_config={
            "ops": {
                "plan_swarm": {
                    "config": {"dry": True, "shards": shards, "per_site": 2, "max_cycles": 0}
                }
            }
        },
        raise_on_error=False,
    )
    assert not result.success
    description = result.failure_data_for_node("plan_swarm").user_failure_data.description
    assert f"set execution.config.multiprocess.max_concurrent to {shards + 1}" in description


@pytest.mark.parametrize(
    ("execution", "expected"),
    [
        ({}, os.cpu_count()),
        ({"execution": {"config": {"multiprocess": {"max_concurrent": 9}}}}, 9),
        ({"execution": {"config": {"in_process": {}}}}, 1),
        ({"execution": {"config": {"celery": {}}}}, None),
    ],
)
def test_concurrent_steps_of_the_default_executor(execution, expected):
    assert concurrent_steps(execution) == expected
