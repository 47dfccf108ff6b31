"""``live-cosmos reconcile`` against an S3 endpoint that never answers (issue 25 item 2).

It gets the export's bucket check first (one request, named in one line), the export's timeouts,
and stops at once on SIGINT or SIGTERM: exit 130 / 143, one line, no traceback, and no request
reaches the endpoint after the signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import cli, commands
from iotswarm_pipelines.export.store_resources import S3ObjectStoreResource
from iotswarm_tests.export_faults import REGION, ROOT, new_bucket
from iotswarm_tests.export_fixtures import PREFIX, SOILMET, insert_rows, make_rows, sqlite_url
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy

SITES = ("ALIC1", "BALRD", "CHIMN")
LIVE_COSMOS = Path(sys.executable).with_name("live-cosmos")


def write_config(folder: Path, endpoint: str, bucket: str) -> Path:
    """A config whose source holds a day of three sites, and whose bucket is behind ``endpoint``."""
    url = sqlite_url(folder)
    times = [datetime(2024, 6, 1, 0, 30) + timedelta(minutes=30 * i) for i in range(48)]
    for table in catalogue.TABLE_NAMES:
        insert_rows(url, table, [])
    for site in SITES:
        insert_rows(url, SOILMET, make_rows(SOILMET, site, times))
    path = folder / "livecosmos.cfg"
    path.write_text(
        f"url='{url}'\nbucket='{bucket}'\nendpoint_url='{endpoint}'\n"
        f"state_dir='{folder / 'state'}'\nbucket_prefix='fdri/cosmos_swarm'\n"
        f"sites='{','.join(SITES)}'\n"
    )
    return path


ARGS = (SOILMET, "--since", "2024-06-01", "--until", "2024-06-01")


def test_an_endpoint_that_never_answers_is_named_by_the_bucket_check(
    tmp_path, s3_endpoint, aws_test_credentials, monkeypatch, capsys
):
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang=True)
    with fault_proxy(s3_endpoint, plan) as proxy:
        config = write_config(tmp_path, proxy, bucket)
        built = commands.stores

        def quick(parsed):  # the config's stores, with a short read timeout to keep this quick
            stores = built(parsed)
            for name, value in aws_test_credentials.items():  # the stores took them (SECURITY.md)
                monkeypatch.setenv(name, value)
            silent = S3ObjectStoreResource(
                s3=S3Resource(endpoint_url=proxy, region_name=REGION),
                bucket=bucket,
                prefix=PREFIX,
                read_timeout_seconds=1,
                max_attempts=2,
            )
            return {**stores, "object_store": silent}

        monkeypatch.setattr(commands, "stores", quick)
        code = cli.run(["reconcile", str(config), *ARGS])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    # The command's own lines (another test's stray thread may write to stderr too).
    [line] = [x for x in captured.err.splitlines() if x.startswith(f"{cli.PROG} ")]
    assert line.startswith(f"{cli.PROG} reconcile: error: s3://{bucket}/fdri/cosmos_swarm: ")
    assert "ReadTimeoutError: Read timeout on endpoint URL" in line
    assert plan.seen == 1  # the HEAD of the bucket, not retried; no listing was started


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_reconciliation_stuck_on_a_silent_endpoint_at_once(
    tmp_path, s3_endpoint, aws_test_credentials, signum, code
):
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang_after=1)  # the bucket check is answered, then silence
    with fault_proxy(s3_endpoint, plan) as proxy:
        config = write_config(tmp_path, proxy, bucket)
        process = subprocess.Popen(
            [str(LIVE_COSMOS), "reconcile", str(config), *ARGS],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert plan.wait_hanging(len(SITES), timeout=120)  # every site's listing waits
            requests = plan.seen
            process.send_signal(signum)
            # Before: it waited for the stuck listings (30 s x 8 attempts), then the other sites'.
            out, err = process.communicate(timeout=60)
            after = plan.seen
        finally:
            process.kill()
    assert process.returncode == code, err
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"{cli.PROG} reconcile: stopped by {signal.Signals(signum).name}")
    assert "Traceback" not in err
    assert after == requests  # nothing new reached the endpoint after the signal
