"""Object stores against a real S3 server (moto on loopback) and real folders.

A fault-injecting proxy in front of the server shows that throttling and 5xx answers are retried
until each key holds exactly one object, and that a server that keeps failing gives per-object
errors instead of an exception.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import boto3
import pytest
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.export.object_store import (
    LocalObjectStore,
    ObjectStore,
    PutResult,
    S3ObjectStore,
)
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy

PREFIX = "fdri/cosmos_swarm"
REGION = "eu-west-2"


def payloads(count: int, site: str = "ALIC1") -> list[tuple[str, bytes]]:
    return [
        (
            f"{PREFIX}/{site}/LIVE_SOILMET_30MIN/{1717200000000 + i * 1800000}-{i:032x}",
            json.dumps({"n": i, "site": site}).encode(),
        )
        for i in range(count)
    ]


@pytest.fixture
def bucket(s3_endpoint, aws_test_credentials) -> Iterator[str]:
    name = f"iotswarm-test-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name


def s3_store(endpoint: str, bucket: str, **options) -> S3ObjectStore:
    return S3ObjectStore(
        s3=S3Resource(endpoint_url=endpoint, region_name=REGION),
        bucket=bucket,
        prefix=PREFIX,
        **options,
    )


def raw_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def versions_per_key(endpoint: str, bucket: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    pages = raw_client(endpoint).get_paginator("list_object_versions").paginate(Bucket=bucket)
    for page in pages:
        for version in page.get("Versions", ()):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def stored_ok(results: list[PutResult]) -> set[str]:
    assert all(isinstance(r, PutResult) for r in results)
    return {r.key for r in results if r.error is None}


def test_s3_store_puts_json_objects_under_their_keys(s3_endpoint, bucket):
    store = s3_store(s3_endpoint, bucket, max_concurrency=4)
    objects = payloads(30)
    results = list(store.put_many(objects))
    assert stored_ok(results) == {key for key, _ in objects}
    assert {r.key: r.size for r in results} == {key: len(body) for key, body in objects}
    assert store.list_keys() == sorted(key for key, _ in objects)
    key, body = objects[7]
    assert store.get(key) == body
    head = raw_client(s3_endpoint).head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/json"
    assert isinstance(store, ObjectStore)


def test_s3_store_lists_only_under_a_prefix_and_describes_itself(s3_endpoint, bucket):
    store = s3_store(s3_endpoint, bucket)
    list(store.put_many(payloads(3, "ALIC1") + payloads(2, "BALRD") + [("elsewhere/x", b"{}")]))
    assert len(store.list_keys()) == 5
    assert len(store.list_keys(f"{PREFIX}/BALRD/")) == 2
    assert store.describe() == f"s3://{bucket}/{PREFIX}"
    with pytest.raises(KeyError, match="no object"):
        store.get(f"{PREFIX}/ALIC1/missing")


def test_s3_client_pool_and_retries_follow_the_concurrency(s3_endpoint, bucket):
    config = s3_store(s3_endpoint, bucket, max_concurrency=40, max_attempts=5).client().meta.config
    assert config.max_pool_connections >= 40
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(fail_first=6, status=503, code="SlowDown"),
        FaultPlan(fail_first=6, status=500, code="InternalError", after_forwarding=True),
    ],
    ids=["throttled-before-storing", "5xx-after-storing"],
)
def test_retries_store_exactly_one_object_per_key(s3_endpoint, bucket, plan):
    objects = payloads(12)
    with fault_proxy(s3_endpoint, plan) as proxy:
        results = list(s3_store(proxy, bucket, max_concurrency=3).put_many(objects))
    assert [r.error for r in results if r.error] == []
    assert plan.waited_to_continue == 0  # no extra round trip per object
    assert plan.failures == 6
    assert plan.requests >= len(objects) + 6  # every failure was retried
    assert s3_store(s3_endpoint, bucket).list_keys() == sorted(key for key, _ in objects)
    versions = versions_per_key(s3_endpoint, bucket)
    if plan.after_forwarding:
        assert sum(versions.values()) == len(objects) + 6  # re-sent, but onto the same keys
    else:
        assert set(versions.values()) == {1}
    assert all(
        raw_client(s3_endpoint).get_object(Bucket=bucket, Key=k)["Body"].read() == b
        for k, b in objects
    )


def test_a_server_that_keeps_failing_gives_errors_not_exceptions(s3_endpoint, bucket):
    plan = FaultPlan(fail_first=None, status=503, code="SlowDown")
    objects = payloads(5)
    with fault_proxy(s3_endpoint, plan) as proxy:
        results = list(s3_store(proxy, bucket, max_concurrency=2, max_attempts=2).put_many(objects))
    assert sorted(r.key for r in results) == sorted(key for key, _ in objects)
    for result in results:
        assert result.error is not None
        assert "SlowDown (HTTP 503) after 2 attempt(s)" in result.error
        assert "\n" not in result.error
        assert "testing-secret" not in result.error
    assert plan.requests == 2 * len(objects)
    assert s3_store(s3_endpoint, bucket).list_keys() == []


def test_unreachable_server_gives_one_line_errors(aws_test_credentials):
    from iotswarm_tests.services import free_port

    store = s3_store(f"http://127.0.0.1:{free_port()}", "iotswarm-test-nowhere", max_attempts=1)
    [result] = store.put_many(payloads(1))
    assert result.error.startswith("EndpointConnectionError: Could not connect")


class CountingSource:
    """An iterable of objects that records how far the store has read it."""

    def __init__(self, objects):
        self.objects, self.taken = objects, 0

    def __iter__(self):
        for item in self.objects:
            self.taken += 1
            yield item


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_put_many_reads_at_most_twice_the_concurrency_ahead(kind, request, tmp_path):
    if kind == "s3":
        store = s3_store(
            request.getfixturevalue("s3_endpoint"),
            request.getfixturevalue("bucket"),
            max_concurrency=3,
        )
    else:
        store = LocalObjectStore(root=str(tmp_path / "objects"), prefix=PREFIX, max_concurrency=3)
    source = CountingSource(payloads(40))
    results = store.put_many(source)
    next(results)
    assert source.taken <= 2 * 3
    rest = list(results)
    assert source.taken == 40
    assert len(rest) == 39


def test_local_store_uses_the_same_key_layout(tmp_path, s3_endpoint, bucket):
    objects = payloads(4, "ALIC1") + payloads(3, "BALRD")
    local = LocalObjectStore(root=str(tmp_path / "objects"), prefix=PREFIX)
    s3 = s3_store(s3_endpoint, bucket)
    assert stored_ok(list(local.put_many(objects))) == stored_ok(list(s3.put_many(objects)))
    assert local.list_keys() == s3.list_keys()
    for key, body in objects:
        assert (tmp_path / "objects" / key).read_bytes() == body
        assert local.get(key) == body
    assert local.describe() == f"{(tmp_path / 'objects').resolve().as_uri()}/{PREFIX}"


def test_local_store_overwrites_a_key_and_ignores_leftover_temporary_files(tmp_path):
    store = LocalObjectStore(root=str(tmp_path), prefix=PREFIX)
    [(key, _)] = payloads(1)
    list(store.put_many([(key, b'{"v": 1}')]))
    (tmp_path / key).parent.joinpath(".leftover.tmp").write_bytes(b'{"v": ')
    list(store.put_many([(key, b'{"v": 2}')]))
    assert store.get(key) == b'{"v": 2}'
    assert store.list_keys() == [key]


def test_local_store_bad_key_fails_alone(tmp_path):
    store = LocalObjectStore(root=str(tmp_path / "objects"), prefix=PREFIX, max_concurrency=2)
    objects = [*payloads(3)[:2], ("../escape", b"{}"), payloads(3)[2]]
    results = list(store.put_many(objects))
    errors = {r.key: r.error for r in results if r.error}
    assert list(errors) == ["../escape"]
    assert "relative path" in errors["../escape"]
    assert not (tmp_path / "escape").exists()
    assert len(store.list_keys()) == 3


def test_local_store_missing_key_and_empty_root(tmp_path):
    store = LocalObjectStore(root=str(tmp_path / "never-written"))
    assert store.list_keys() == []
    with pytest.raises(KeyError, match="no object"):
        store.get("ALIC1/x")


def test_a_failing_payload_source_still_reports_what_was_stored(tmp_path):
    store = LocalObjectStore(root=str(tmp_path), prefix=PREFIX, max_concurrency=2)

    def source():
        yield from payloads(5)
        raise RuntimeError("source went away")

    seen: list[PutResult] = []
    with pytest.raises(RuntimeError, match="source went away"):
        for result in store.put_many(source()):
            seen.append(result)
    assert stored_ok(seen) == {key for key, _ in payloads(5)}
    assert len(store.list_keys()) == 5
