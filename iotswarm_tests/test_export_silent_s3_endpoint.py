"""An S3 endpoint that accepts connections and never answers.

The bucket check names it before anything is read; a store that falls silent mid-run stops
the run after failed uploads in a row, with the watermark covering only what was stored; and
Ctrl-C ends an export stuck on it at once.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from iotswarm_pipelines.export.pipeline import ExportError
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.store_errors import StoreUnavailableError
from iotswarm_tests.export_faults import (
    ROOT,
    T0,
    export,
    half_hours,
    new_bucket,
    s3_on,
    seed,
    stored_rows,
)
from iotswarm_tests.export_fixtures import SOILMET
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy

pytestmark = pytest.mark.usefixtures("fresh_engines")


def silent_s3(proxy: str, bucket: str, **options):
    return s3_on(proxy, bucket, read_timeout_seconds=1, max_attempts=2, **options)


def test_an_endpoint_that_never_answers_is_named_by_the_bucket_check(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang=True)
    with fault_proxy(s3_endpoint, plan) as proxy, pytest.raises(StoreUnavailableError) as caught:
        export(cosmos_url, silent_s3(proxy, bucket), local_state)
    assert "ReadTimeoutError: Read timeout on endpoint URL" in str(caught.value)
    assert not any(p.exists() for p in local_state.paths(SOILMET))


def test_a_store_that_falls_silent_mid_run_stops_the_run_after_failures_in_a_row(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 40)})
    healthy = new_bucket(s3_endpoint)
    plan = FaultPlan(fail_first=0, hang_after=1)  # the bucket check is answered, then silence
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = silent_s3(proxy, healthy.bucket, max_concurrency=2, stop_after_failures=2)
        with pytest.raises(ExportError) as caught:
            export(cosmos_url, store, local_state)
    message = str(caught.value)
    assert "ReadTimeoutError" in message
    assert "2 uploads failed in a row (last: ReadTimeoutError" in message
    assert "stopped sending" in message
    assert caught.value.summary.payloads_built < 40  # the rest was not even read
    assert watermark(local_state.load(SOILMET), "ALIC1") is None

    assert export(cosmos_url, healthy, local_state).rows_read == 40
    assert set(stored_rows(healthy).values()) == {1}


CTRL_C_EXPORT = """
import sys
from dagster_aws.s3 import S3Resource
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import S3ObjectStore
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_pipelines.export.state_store import StateStore
endpoint, bucket, url, state_dir = sys.argv[1:5]
store = S3ObjectStore(s3=S3Resource(endpoint_url=endpoint, region_name="eu-west-2"),
                      bucket=bucket, read_timeout_seconds=60, max_attempts=8)
export_table(catalogue.SOILMET_30MIN, source=CosmosSource(url=url), store=store,
             state=StateStore(state_dir=state_dir), fallback_hours=None)
"""


def test_ctrl_c_stops_an_export_stuck_on_a_silent_endpoint_at_once(
    cosmos_url, local_state, s3_endpoint, aws_test_credentials
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 8)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang_after=1)
    with fault_proxy(s3_endpoint, plan) as proxy:
        export_process = subprocess.Popen(
            [sys.executable, "-c", CTRL_C_EXPORT, proxy, bucket, cosmos_url, local_state.state_dir],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert plan.hung.wait(timeout=60)  # uploads are now waiting for an answer
            export_process.send_signal(signal.SIGINT)
            # Before: the process waited for its stuck uploads (60 s x 8 attempts each).
            _, stderr = export_process.communicate(timeout=20)
        finally:
            export_process.kill()
    assert export_process.returncode != 0 and "KeyboardInterrupt" in stderr
    assert watermark(local_state.load(SOILMET), "ALIC1") is None
