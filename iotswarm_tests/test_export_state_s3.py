"""The S3 state store on a real S3-compatible server (moto): two writers, leases, whole exports.

The loading and recovery rules it shares with the local files are tested for both backends in
``test_export_state_store.py``; here is what only S3 has: conditional writes between machines,
the per-table lease, and the selection of the backend by configuration.
"""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta

import dagster as dg
import pytest
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines import resources as deployment
from iotswarm_pipelines.export import cli
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.config_file import ConfigFileError, parse_config
from iotswarm_pipelines.export.object_store import S3ObjectStore
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_s3 import S3StateStore
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.store_errors import StateConflictError, StateLockedError
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, source
from iotswarm_tests.services import wait_until
from iotswarm_tests.state_copies import BACKUP, REGION, S3Copies, hold_lock, make_bucket

TABLE = SOILMET
T0 = datetime(2024, 6, 1, 0, 30)
LEASE = "fdri/cosmos_swarm_state/LEVEL1_SOILMET_30MIN.lock"


def state_at(when: datetime, site: str = "ALIC1") -> dict:
    return {"last_run": when, "sites": {site: {"site_id": site, "last_data": when}}}


@pytest.fixture
def copies(s3_endpoint, aws_test_credentials) -> S3Copies:
    return S3Copies(s3_endpoint, make_bucket(s3_endpoint))


def test_the_server_honours_conditional_puts(copies):
    """The guarantees below rest on these answers (moto >= 5.1.5; AWS S3 since 2024)."""
    client, key = copies.client, "probe"
    etag = client.put_object(Bucket=copies.bucket, Key=key, Body=b"1", IfNoneMatch="*")["ETag"]
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(ClientError) as caught:
            client.put_object(Bucket=copies.bucket, Key=key, Body=b"2", **condition)
        assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    client.put_object(Bucket=copies.bucket, Key=key, Body=b"2", IfMatch=etag)
    assert copies.get(key) == b"2"


def test_second_writer_fails_and_the_first_writers_progress_is_intact(copies):
    copies.store().save(TABLE, state_at(T0))
    first, second = copies.store(), copies.store()  # two machines, both read the same state
    assert first.load(TABLE) == second.load(TABLE) == state_at(T0)
    first.save(TABLE, state_at(T0 + timedelta(hours=2)))
    with pytest.raises(StateConflictError) as caught:
        second.save(TABLE, state_at(T0 + timedelta(hours=1)))
    message = str(caught.value)
    assert f"s3://{copies.bucket}/{copies.where(TABLE)}" in message
    assert "changed by another writer" in message and "run again" in message
    assert "\n" not in message and "testing-secret" not in message
    for suffix in (".pickle", BACKUP):
        assert pickle.loads(copies.get(copies.where(TABLE, suffix))) == state_at(
            T0 + timedelta(hours=2)
        )
    # Once it has read the newer state, the second writer moves on from there.
    second.advance(TABLE, {"BALRD": T0})
    final = copies.store().load(TABLE)
    assert watermark(final, "ALIC1") == T0 + timedelta(hours=2)
    assert watermark(final, "BALRD") == T0


def test_a_writer_that_found_no_state_cannot_overwrite_one_created_since(copies):
    late = copies.store()
    assert late.load(TABLE)["sites"] == {}
    copies.store().advance(TABLE, {"ALIC1": T0})
    with pytest.raises(StateConflictError):
        late.save(TABLE, state_at(T0 - timedelta(days=1), "BALRD"))
    assert copies.store().load(TABLE) == state_at(T0)


def test_a_retried_write_that_had_already_landed_is_not_a_conflict(copies):
    """A lost answer makes botocore send the PUT again; it then finds its own bytes there."""
    store = copies.store()
    store.load(TABLE)
    main = copies.where(TABLE)
    new = pickle.dumps(state_at(T0), protocol=4)
    copies.put(main, new)  # what the first, unanswered attempt stored
    store.save(TABLE, state_at(T0))
    assert copies.get(copies.where(TABLE, BACKUP)) == new


def test_lease_excludes_another_machine_and_names_the_holder(copies):
    with hold_lock(copies.store()):
        lease = json.loads(copies.get(LEASE))
        with pytest.raises(StateLockedError) as caught, copies.store().locked(TABLE, timeout=0):
            pass
    message = str(caught.value)
    assert f"s3://{copies.bucket}/{LEASE}" in message and lease["owner"] in message
    assert copies.get(LEASE) is None  # released


def test_the_holder_renews_its_lease(copies):
    store = copies.store(lease_seconds=0.3)
    with store.locked(TABLE):
        wait_until(lambda: json.loads(copies.get(LEASE))["renewal"] >= 2, 30, "lease renewals")


def test_a_crashed_holders_stale_lease_is_taken_over_once(copies):
    # What a holder leaves when it dies: a lease nobody renews (0 s: stale at once).
    copies.put(LEASE, json.dumps({"owner": "dead-host:1:x", "lease_seconds": 0}).encode())
    with hold_lock(copies.store()):
        assert json.loads(copies.get(LEASE))["owner"] != "dead-host:1:x"
        with pytest.raises(StateLockedError), copies.store().locked(TABLE, timeout=0):
            pass  # the new holder's lease is fresh: no second takeover
    assert copies.get(LEASE) is None


def test_a_holder_whose_lease_was_taken_over_leaves_the_new_lease_alone(copies):
    taker = json.dumps({"owner": "other-host:2:y", "lease_seconds": 120, "renewal": 0}).encode()
    with copies.store().locked(TABLE):
        # The holder stalled past its lease and another machine took the lease over.
        copies.put(LEASE, taker)
    assert copies.get(LEASE) == taker


@pytest.fixture
def newest_rows(cosmos_url) -> tuple[str, datetime]:
    """A database with two sites of two rows each; its URL and the newest row's time."""
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=40)
    times = [recent, recent + timedelta(minutes=30)]
    for site in ("ALIC1", "BALRD"):
        insert_rows(cosmos_url, TABLE, make_rows(TABLE, site, times))
    return cosmos_url, times[-1]


def test_live_export_asset_with_s3_objects_and_s3_state(copies, newest_rows):
    url, newest = newest_rows
    objects = S3ObjectStore(
        s3=S3Resource(endpoint_url=copies.endpoint, region_name=REGION),
        bucket=copies.bucket,
        prefix="fdri/cosmos_swarm",
    )
    resources = {"cosmos": source(url), "object_store": objects, "state": copies.store()}
    first = dg.materialize([cosmos_live_export], partition_key=TABLE, resources=resources)
    assert first.success
    payload_keys = objects.list_keys()
    assert len(payload_keys) == 4
    state = copies.store().load(TABLE)
    assert {site: watermark(state, site) for site in state["sites"]} == {
        "ALIC1": newest,
        "BALRD": newest,
    }
    assert copies.get(LEASE) is None  # released at the end of the run
    rerun = dg.materialize([cosmos_live_export], partition_key=TABLE, resources=resources)
    assert rerun.success
    [event] = rerun.asset_materializations_for_node(cosmos_live_export.op.name)
    assert event.metadata["objects"].value == 0
    assert objects.list_keys() == payload_keys
    assert copies.store().load(TABLE) == state


def test_old_tools_state_copied_into_the_bucket_is_where_an_export_starts(copies, tmp_path):
    old = StateStore(state_dir=str(tmp_path / "old"))
    old.save(TABLE, state_at(T0))
    for path in old.paths(TABLE):
        copies.put(f"{copies.prefix}/{path.name}", path.read_bytes())
    assert copies.store().load(TABLE) == old.load(TABLE)


def test_live_cosmos_config_state_prefix_keeps_the_state_in_the_bucket(
    copies, newest_rows, tmp_path
):
    url, newest = newest_rows
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{url}'\nbucket='{copies.bucket}'\nendpoint_url='{copies.endpoint}'\n"
        f"bucket_prefix='fdri/cosmos_swarm'\nstate_prefix='{copies.prefix}'\n"
    )
    assert cli.run([str(config), TABLE]) == cli.EXIT_OK
    assert watermark(copies.store().load(TABLE), "BALRD") == newest
    assert f"{TABLE}.pickle.backup" in copies.names()


def test_config_file_state_prefix(tmp_path):
    path = tmp_path / "c.cfg"
    path.write_text("url='sqlite://'\nbucket='iotswarm-test'\nstate_prefix='fdri/state'\n")
    assert parse_config(path).state_prefix == "fdri/state"


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("bucket='iotswarm-test'\nstate_dir='/tmp/x'", "line 2: give state_dir='…' .* not both"),
        ("object_dir='/tmp/x'", "line 2: state_prefix keeps the state in the bucket"),
    ],
    ids=["and-state-dir", "without-bucket"],
)
def test_config_file_state_prefix_conflicts_are_one_line(tmp_path, destination, message):
    path = tmp_path / "c.cfg"
    path.write_text(f"url='sqlite://'\nstate_prefix='fdri/state'\n{destination}\n")
    with pytest.raises(ConfigFileError, match=message) as caught:
        parse_config(path)
    assert "\n" not in str(caught.value)


@pytest.fixture
def prod(monkeypatch):
    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "prod")
    monkeypatch.setenv("LIVECOSMOS_BUCKET", "iotswarm-test-prod")
    monkeypatch.delenv("LIVECOSMOS_STATE_DIR", raising=False)
    return monkeypatch


def test_prod_state_uri_selects_the_s3_store(prod):
    prod.setenv("LIVECOSMOS_STATE_URI", "s3://iotswarm-test-state/fdri/cosmos_swarm_state/")
    state = deployment.build_resources()["state"].build()
    assert isinstance(state, S3StateStore)
    assert (state.bucket, state.prefix) == ("iotswarm-test-state", "fdri/cosmos_swarm_state")


def test_prod_without_a_state_uri_keeps_local_files(prod, tmp_path):
    prod.setenv("LIVECOSMOS_STATE_DIR", str(tmp_path))
    state = deployment.build_resources()["state"].build()
    assert isinstance(state, StateStore)


@pytest.mark.parametrize(
    ("uri", "state_dir", "message"),
    [
        ("iotswarm-test-state/x", None, "LIVECOSMOS_STATE_URI must look like s3://bucket/prefix"),
        ("s3:///x", None, "LIVECOSMOS_STATE_URI must look like s3://bucket/prefix"),
        ("s3://iotswarm-test-state/x", "/tmp/state", "are both set; unset one"),
    ],
)
def test_bad_state_selection_is_one_line(prod, uri, state_dir, message):
    prod.setenv("LIVECOSMOS_STATE_URI", uri)
    if state_dir:
        prod.setenv("LIVECOSMOS_STATE_DIR", state_dir)
    with pytest.raises(ValueError, match=message) as caught:
        deployment.build_resources()
    assert "\n" not in str(caught.value)
