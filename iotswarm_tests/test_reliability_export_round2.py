"""Export faults of issue 13 (items 1-9) and issue 11's site IDs: real files, databases, S3.

Each test breaks one promise the way an operator met it (odd site spellings, a row from the
future, a poison value, a hung or missing bucket, a full disk, a crash mid-batch, a flipped bit)
and checks that nothing is lost or re-sent silently and that the failure names its cause.
RELIABILITY.md maps issue 13 here (``R2``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.cosmos.source import CosmosSource, dispose_engines
from iotswarm_pipelines.export.object_store import StoreUnavailableError
from iotswarm_pipelines.export.pipeline import ExportError, StateNotSavedError, export_table
from iotswarm_pipelines.export.sites import UnknownSiteError
from iotswarm_tests.export_fixtures import (
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    sqlite_url,
    state_store,
)
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy
from iotswarm_tests.test_reliability_export import (
    ROOT,
    HookedStore,
    half_hours,
    new_bucket,
    s3_on,
    stored_rows,
)

T0 = datetime(2024, 6, 1)


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    dispose_engines()


def seed(url: str, sites: dict[str, list[datetime]], table: str = SOILMET) -> None:
    for site, times in sites.items():
        insert_rows(url, table, make_rows(table, site, times))


def export(url, store, state, **kwargs):
    kwargs.setdefault("source", CosmosSource(url=url, retry_backoff_seconds=0.01))
    kwargs.setdefault("fallback_hours", None)
    return export_table(SOILMET, store=store, state=state, **kwargs)


# ------------------------------------------------------------- 1. site IDs as stored


@pytest.mark.parametrize("configured", [["alic1"], [" ALIC1"], ["ALIC1", "ALIC1", "alic1"]])
def test_configured_sites_match_as_stored_once_each(tmp_path, configured):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})

    summary = export(url, store, state, sites=configured)
    assert summary.rows_read == 4 and summary.objects_stored == 4 and summary.sites == 1
    assert set(stored_rows(store).values()) == {1}
    assert {site for site, _ in stored_rows(store)} == {"ALIC1"}
    assert export(url, store, state, sites=configured).rows_read == 0  # the watermark moved


def test_lower_case_site_ids_in_the_source_are_read_and_their_watermark_moves(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"alic1": half_hours(T0, 3)})

    summary = export(url, store, state, sites=["ALIC1"])
    assert summary.rows_read == 3
    assert summary.watermarks == {"alic1": T0 + timedelta(hours=1)}
    assert export(url, store, state).rows_read == 0  # all sites: the same stored ID


def test_a_site_the_catalogue_does_not_know_yet_is_exported_with_a_warning(tmp_path, caplog):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"NEWS1": half_hours(T0, 2), "ALIC1": half_hours(T0, 2)})

    with caplog.at_level(logging.WARNING):
        summary = export(url, store, state)
    assert summary.rows_read == 4 and set(summary.watermarks) == {"ALIC1", "NEWS1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{SOILMET}: site NEWS1 is in the source but not in the catalogue; exported anyway "
        "(the source is the truth)"
    ]


def test_a_configured_site_that_matches_nothing_is_one_clear_line(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 2)})

    with pytest.raises(UnknownSiteError) as caught:
        export(url, store, state, sites=["NOPE1"])
    assert str(caught.value) == (
        f"unknown COSMOS site 'NOPE1': neither {SOILMET} (in any case) nor the catalogue holds "
        "it; sites with rows there: ALIC1"
    )
    assert store.list_keys() == [] and not any(p.exists() for p in state.paths(SOILMET))


def test_a_catalogue_site_without_rows_in_the_table_is_a_warning_not_a_failure(tmp_path, caplog):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 2)})

    with caplog.at_level(logging.WARNING):
        summary = export(url, store, state, sites=["alic1", "balrd"])
    assert summary.rows_read == 2
    assert f"{SOILMET}: site balrd has no rows in this table; nothing to send" in caplog.text
    assert Counter(site for site, _ in stored_rows(store)) == {"ALIC1": 2}


# ------------------------------------------------------------ 5. failures say why


def test_a_missing_bucket_is_named_by_one_request_before_any_upload(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    plan = FaultPlan(fail_first=0)  # forwards everything, counting requests
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = s3_on(proxy, "iotswarm-no-such-bucket")
        with pytest.raises(StoreUnavailableError) as caught:
            export(url, store, state)
    assert "NoSuchBucket (HTTP 404) for bucket iotswarm-no-such-bucket" in str(caught.value)
    assert "create the bucket" in str(caught.value)
    assert plan.requests == 1  # one HEAD, no upload attempted
    assert not any(p.exists() for p in state.paths(SOILMET))


def test_refused_credentials_are_named_before_any_upload(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=None, status=403, code="AccessDenied", message="Access Denied")
    with (
        fault_proxy(s3_endpoint, plan) as proxy,
        pytest.raises(StoreUnavailableError, match=r"AccessDenied \(HTTP 403\)"),
    ):
        export(url, s3_on(proxy, bucket), state)
    assert plan.requests == 1


class BreaksAfterCheck(HookedStore):
    """The bucket answers its check, then refuses every upload (a policy changed mid-run)."""

    def __init__(self, inner, plan: FaultPlan) -> None:
        super().__init__(inner, hook=lambda n: None)
        self.plan = plan

    def check(self) -> None:
        self.inner.check()
        self.plan.fail_first = None


def test_failed_uploads_name_their_cause_in_the_one_line(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 3)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, status=403, code="AccessDenied", message="Access Denied")
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = BreaksAfterCheck(s3_on(proxy, bucket, max_concurrency=1), plan)
        with pytest.raises(ExportError) as caught:
            export(url, store, state)
    assert "3 of 3 payloads were not stored after retries" in str(caught.value)
    assert "AccessDenied (HTTP 403) after 1 attempt(s): Access Denied" in str(caught.value)


ENOSPC_EXPORT = """
import sys
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.pipeline import ExportError, export_table
from iotswarm_pipelines.export.state_store import StateStore
root, url, state_dir = sys.argv[1:4]
try:
    export_table("LEVEL1_SOILMET_30MIN", source=CosmosSource(url=url), fallback_hours=None,
                 store=LocalObjectStore(root=root), state=StateStore(state_dir=state_dir))
except ExportError as exc:
    print(exc)
"""


def test_a_full_disk_is_named_enospc(tmp_path):
    """The object folder is a 8 KiB tmpfs, mounted in a private mount namespace."""
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 24)})
    root = tmp_path / "objects"
    root.mkdir()
    mount_and_run = 'mount -t tmpfs -o size=8k tmpfs "$1" && exec "$0" -c "$2" "$1" "$3" "$4"'
    result = subprocess.run(
        [
            *("unshare", "--mount", "sh", "-c", mount_and_run),
            *(sys.executable, str(root), ENOSPC_EXPORT, url, state.state_dir),  # $0 .. $4
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "payloads were not stored after retries" in result.stdout
    assert "ENOSPC: No space left on device" in result.stdout
    assert list(root.iterdir()) == []  # the tmpfs was private to the export


def test_state_that_cannot_be_saved_after_storing_says_so(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    main, _ = state.paths(SOILMET)

    def block_the_state_file(n: int) -> None:
        if n == 1:  # a folder where the main state file goes: its save must fail
            (main / "in-the-way").mkdir(parents=True)

    with pytest.raises(StateNotSavedError) as caught:
        export(url, HookedStore(store, block_the_state_file), state)
    message = str(caught.value)
    assert message.startswith(f"{SOILMET}: 4 objects stored, watermark not saved (")
    assert "the next run re-sends them to the same keys" in message
    keys = store.list_keys()
    assert len(keys) == 4

    (main / "in-the-way").rmdir()
    main.rmdir()
    assert export(url, store, state).rows_read == 4
    assert store.list_keys() == keys  # re-sent onto the same keys
    assert set(stored_rows(store).values()) == {1}
