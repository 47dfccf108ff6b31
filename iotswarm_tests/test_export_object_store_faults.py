"""Object stores that fail: S3 behind a fault-injecting proxy, and a full disk.

Faults that pass store one object per payload with one state save; faults that last fail the
run with the watermark at the last stored payload, and the rerun stores the rest once. A
missing bucket or refused credentials are named by one request before any upload, and failed
uploads put their cause in the run's one line.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import boto3
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.pipeline import ExportError
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.store_errors import StoreUnavailableError
from iotswarm_pipelines.export.watermarks import newest_time
from iotswarm_tests.delegating_store import DelegatingStore
from iotswarm_tests.export_faults import (
    REGION,
    T0,
    CrashingState,
    HookedStore,
    assert_exactly_the_expected_objects,
    expected_objects,
    export,
    half_hours,
    new_bucket,
    s3_on,
    seed,
)
from iotswarm_tests.export_fixtures import state_store
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy
from iotswarm_tests.small_disk import run_on_small_disk

pytestmark = pytest.mark.usefixtures("fresh_engines")


class CountingState(CrashingState):
    """Counts the state saves of a run."""

    saves = 0

    def save(self, table, state) -> None:
        self.saves += 1
        super().save(table, state)


@pytest.mark.parametrize("after_forwarding", [False, True], ids=["503-slowdown", "500-after-store"])
def test_s3_faults_that_recover_store_one_object_per_payload_and_advance_once(
    tmp_path, cosmos_url, s3_endpoint, aws_test_credentials, after_forwarding
):
    seed(cosmos_url, {site: half_hours(T0, 6) for site in ("ALIC1", "BALRD")})
    healthy = new_bucket(s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).put_bucket_versioning(
        Bucket=healthy.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    plan = FaultPlan(
        fail_first=8,
        status=500 if after_forwarding else 503,
        code="InternalError" if after_forwarding else "SlowDown",
        after_forwarding=after_forwarding,
    )
    state = CountingState(state_store(tmp_path))
    with fault_proxy(s3_endpoint, plan) as proxy:
        summary = export(cosmos_url, s3_on(proxy, healthy.bucket, max_concurrency=3), state)
    assert plan.failures == 8 and summary.failed == 0  # the bucket check met the first one
    assert state.saves == 1
    assert summary.watermarks == dict.fromkeys(
        ("ALIC1", "BALRD"), T0 + timedelta(hours=2, minutes=30)
    )
    assert_exactly_the_expected_objects(cosmos_url, healthy)
    pages = (
        boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
        .get_paginator("list_object_versions")
        .paginate(Bucket=healthy.bucket)
    )
    versions = Counter(v["Key"] for page in pages for v in page.get("Versions", ()))
    # A 500 after the server stored the object makes the retry write the same key again (7
    # times: the bucket check's HEAD, not retried, met the first failure and let the run go on).
    assert sum(versions.values()) == 12 + (7 if after_forwarding else 0)


def test_s3_that_never_recovers_fails_the_run_and_the_rerun_completes(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 12)})
    healthy = new_bucket(s3_endpoint)
    plan = FaultPlan(fail_first=0, status=503, code="SlowDown")

    def break_for_good(n: int) -> None:
        if n == 6:
            plan.fail_first = None  # from now on every request fails

    with fault_proxy(s3_endpoint, plan) as proxy:
        failing = s3_on(proxy, healthy.bucket, max_concurrency=1, max_attempts=2)
        with pytest.raises(ExportError, match=r"of 12 payloads were not stored after retries"):
            export(cosmos_url, HookedStore(failing, break_for_good), local_state)
    assert plan.failures > 0
    stored = healthy.list_keys()
    mark = watermark(local_state.load(catalogue.SOILMET_30MIN), "ALIC1")
    assert mark is not None and 4 <= len(stored) < 12
    # The watermark is the newest row of the last stored payload, with every earlier one stored.
    expected = expected_objects(cosmos_url)
    assert set(stored) == {k for k, rows in expected.items() if newest_time(rows) <= mark}

    summary = export(cosmos_url, healthy, local_state)
    assert summary.rows_read == 12 - len(stored)
    assert_exactly_the_expected_objects(cosmos_url, healthy)


def test_a_missing_bucket_is_named_by_one_request_before_any_upload(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    plan = FaultPlan(fail_first=0)  # forwards everything, counting requests
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = s3_on(proxy, "iotswarm-no-such-bucket")
        with pytest.raises(StoreUnavailableError) as caught:
            export(cosmos_url, store, local_state)
    assert "NoSuchBucket (HTTP 404) for bucket iotswarm-no-such-bucket" in str(caught.value)
    assert "create the bucket" in str(caught.value)
    assert plan.requests == 1  # one HEAD, no upload attempted
    assert not any(p.exists() for p in local_state.paths(catalogue.SOILMET_30MIN))


def test_refused_credentials_are_named_before_any_upload(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=None, status=403, code="AccessDenied", message="Access Denied")
    with (
        fault_proxy(s3_endpoint, plan) as proxy,
        pytest.raises(StoreUnavailableError, match=r"AccessDenied \(HTTP 403\)"),
    ):
        export(cosmos_url, s3_on(proxy, bucket), local_state)
    assert plan.requests == 1


class BreaksAfterCheck(DelegatingStore):
    """The bucket answers its check, then refuses every upload (a policy changed mid-run)."""

    def __init__(self, inner, plan: FaultPlan) -> None:
        super().__init__(inner)
        self.plan = plan

    def check(self) -> None:
        self.inner.check()
        self.plan.fail_first = None


def test_failed_uploads_name_their_cause_in_the_one_line(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 3)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, status=403, code="AccessDenied", message="Access Denied")
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = BreaksAfterCheck(s3_on(proxy, bucket, max_concurrency=1), plan)
        with pytest.raises(ExportError) as caught:
            export(cosmos_url, store, local_state)
    assert "3 of 3 payloads were not stored after retries" in str(caught.value)
    assert "AccessDenied (HTTP 403) after 1 attempt(s): Access Denied" in str(caught.value)


ENOSPC_EXPORT = """
import sys
from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.pipeline import ExportError, export_table
from iotswarm_pipelines.export.state_store import StateStore
root, url, state_dir = sys.argv[1:4]
try:
    export_table(catalogue.SOILMET_30MIN, source=CosmosSource(url=url), fallback_hours=None,
                 store=LocalObjectStore(root=root), state=StateStore(state_dir=state_dir))
except ExportError as exc:
    print(exc)
"""


def test_a_full_disk_is_named_enospc(tmp_path, cosmos_url, local_state):
    """The object folder is a 8 KiB tmpfs, mounted in a private mount namespace."""
    seed(cosmos_url, {"ALIC1": half_hours(T0, 24)})
    root = tmp_path / "objects"
    root.mkdir()
    result = run_on_small_disk(root, "8k", ENOSPC_EXPORT, cosmos_url, local_state.state_dir)
    assert result.returncode == 0, result.stderr
    assert "payloads were not stored after retries" in result.stdout
    assert "ENOSPC: No space left on device" in result.stdout
    assert list(root.iterdir()) == []  # the tmpfs was private to the export
