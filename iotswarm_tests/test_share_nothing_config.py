"""The share-nothing configuration's parts: step outputs and swarm sessions/reports in S3.

The whole deployment on isolated workers is ``test_share_nothing.py``; here each part is
selected by its variable and works against the real S3-compatible server (moto).
"""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import pytest
from dagster_aws.s3 import S3PickleIOManager

from iotswarm_pipelines import resources
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.session_store import FolderStore, S3Store, open_store
from iotswarm_pipelines.swarm.sessions import DevicePosition
from iotswarm_tests.state_copies import make_bucket

T0 = datetime(2024, 6, 1, 0, 30)


@pytest.fixture
def prod(monkeypatch):
    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "prod")
    monkeypatch.setenv("LIVECOSMOS_BUCKET", "iotswarm-test-prod")
    monkeypatch.delenv("IOTSWARM_IO_URI", raising=False)
    return monkeypatch


def test_io_uri_selects_s3_step_outputs_in_prod_only(prod):
    assert "io_manager" not in resources.build_resources()  # the instance's filesystem one
    prod.setenv("IOTSWARM_IO_URI", "s3://iotswarm-test-steps/dagster/")
    io_manager = resources.build_resources()["io_manager"]
    assert isinstance(io_manager, S3PickleIOManager)
    assert (io_manager.s3_bucket, io_manager.s3_prefix) == ("iotswarm-test-steps", "dagster")
    prod.setenv("IOTSWARM_DEPLOYMENT", "local")
    assert "io_manager" not in resources.build_resources()


def test_a_bad_io_uri_is_one_line(prod):
    prod.setenv("IOTSWARM_IO_URI", "iotswarm-test-steps/dagster")
    with pytest.raises(ValueError, match=r"^IOTSWARM_IO_URI must look like s3://") as caught:
        resources.build_resources()
    assert "\n" not in str(caught.value)


def test_sessions_location_is_config_then_variable_then_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("IOTSWARM_SESSIONS_URI", raising=False)
    assert isinstance(open_store(), FolderStore)
    assert open_store().describe("a.json").endswith("iotswarm-data/swarm_sessions/a.json")
    monkeypatch.setenv("IOTSWARM_SESSIONS_URI", "s3://iotswarm-test-sessions/swarm")
    assert open_store().describe("a.json") == "s3://iotswarm-test-sessions/swarm/a.json"
    assert open_store(tmp_path).describe("a.json") == str(tmp_path / "a.json")
    with pytest.raises(SwarmConfigError, match="must look like s3://"):
        open_store("s3:///no-bucket")


def test_sessions_and_reports_in_s3_merge_fold_and_read_back(
    s3_endpoint, aws_test_credentials, monkeypatch
):
    monkeypatch.setenv("LIVECOSMOS_S3_ENDPOINT_URL", s3_endpoint)
    where = f"s3://{make_bucket(s3_endpoint)}/sessions"
    first = {"a": DevicePosition(T0, 3, 10.0), "b": DevicePosition(T0, 1, 10.0)}
    sessions.save_shard("s1", 0, "T", "loop", first, where)
    sessions.save_shard("s1", 1, "T", "loop", {"b": DevicePosition(T0, 4, 20.0)}, where)
    sessions.save_shard("s10", 0, "T", "loop", {"z": DevicePosition(T0, 9, 30.0)}, where)

    merged = sessions.load_session("s1", where)
    assert merged is not None and {d: p.cycles for d, p in merged.positions.items()} == {
        "a": 3,
        "b": 4,
    }
    assert sessions.consolidate("s1", where) == f"{where}/s1.json"
    store = open_store(where)
    assert isinstance(store, S3Store)
    assert store.names("s1") == ["s1.json", "s10.shard-0.json"]  # s1's shards folded away
    assert sessions.load_session("s1", where) == merged
    saved = sessions.save_report("s1", {"sent": 6, "lost": 0}, where)
    assert json.loads(store.read("s1.report.json") or b"") == {"sent": 6, "lost": 0}
    assert saved == f"{where}/s1.report.json"
    assert sessions.load_session("nothing", where) is None


@dg.op
def one() -> int:
    return 1


@dg.op
def plus_one(value: int) -> int:
    return value + 1


def test_step_outputs_go_to_the_bucket(prod, s3_endpoint, aws_test_credentials):
    bucket = make_bucket(s3_endpoint)
    prod.setenv("LIVECOSMOS_S3_ENDPOINT_URL", s3_endpoint)
    prod.setenv("IOTSWARM_IO_URI", f"s3://{bucket}/steps")

    @dg.job(resource_defs={"io_manager": resources.build_resources()["io_manager"]})
    def two_steps() -> None:
        plus_one(one())

    with dg.instance_for_test() as instance:
        result = two_steps.execute_in_process(instance=instance)
    assert result.output_for_node("plus_one") == 2
    assert open_store(f"s3://{bucket}/steps").names(f"storage/{result.run_id}/") == [
        f"storage/{result.run_id}/one/result",
        f"storage/{result.run_id}/plus_one/result",
    ]


def test_each_host_names_its_own_source_addresses_and_brokers(prod):
    prod.setenv("IOTSWARM_MQTT_HOST", "broker.example")
    prod.setenv("IOTSWARM_MQTT_SOURCE_ADDRESSES", "127.0.0.3, 127.0.0.4")
    prod.setenv("IOTSWARM_MQTT_BROKERS", "b1.example:8883,b2.example")
    mqtt = resources.build_resources()["mqtt"]
    assert mqtt.source_addresses == ["127.0.0.3", "127.0.0.4"]
    assert [mqtt.settings(shard=k).source_address for k in range(3)] == [
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.3",
    ]
    assert [mqtt.settings(shard=k).host for k in range(2)] == ["b1.example", "b2.example"]
    prod.delenv("IOTSWARM_MQTT_SOURCE_ADDRESSES")
    assert resources.build_resources()["mqtt"].settings(shard=1).source_address is None
