"""Export faults of issue 13 (items 1-9) and issue 11's site IDs: real files, databases, S3.

Each test breaks one promise the way an operator met it (odd site spellings, a row from the
future, a poison value, a hung or missing bucket, a full disk, a crash mid-batch, a flipped bit)
and checks that nothing is lost or re-sent silently and that the failure names its cause.
RELIABILITY.md maps issue 13 here (``R2``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource, dispose_engines
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.pipeline import ExportError, StateNotSavedError, export_table
from iotswarm_pipelines.export.sites import UnknownSiteError
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.store_errors import StoreUnavailableError
from iotswarm_tests.export_fixtures import (
    PREFIX,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    sqlite_url,
    state_store,
)
from iotswarm_tests.s3_fault_proxy import FaultPlan, fault_proxy
from iotswarm_tests.small_disk import run_on_small_disk
from iotswarm_tests.test_reliability_export import (
    ROOT,
    HookedStore,
    half_hours,
    new_bucket,
    s3_on,
    stored_rows,
)

T0 = datetime(2024, 6, 1)
SITES3 = ("ALIC1", "BALRD", "CHIMN")
FORK = multiprocessing.get_context("fork")  # the child shares the imported modules: fast


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
from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export.assets import cosmos_live_export
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
    result = run_on_small_disk(root, "8k", ENOSPC_EXPORT, url, state.state_dir)
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


# ------------------------------------------------------------------ 8. odd inputs early


@pytest.mark.parametrize("hours", [float("nan"), -1])  # any size from 0 up is accepted
def test_absurd_fallback_hours_are_refused_before_anything_runs(tmp_path, hours):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 2)})
    with pytest.raises(ValueError, match="fallback_hours must be a number of hours, 0 or more"):
        export(url, store, state, fallback_hours=hours)
    assert not (tmp_path / "state").exists() and store.list_keys() == []


def test_iso_t_date_times_on_sqlite_are_refused_with_the_fix_then_export_once(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    engine = sa.create_engine(url)
    rewrite = f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, ' ', 'T')"
    with engine.begin() as conn:
        conn.execute(sa.text(rewrite))  # as a tool writing isoformat() would have stored them

    with pytest.raises(SourceError) as caught:
        export(url, store, state)
    assert (
        f"{SOILMET} stores DATE_TIME of site ALIC1 as ISO text with a 'T' "
        "(2024-06-01T01:30:00.000000), which SQLite compares wrongly; rewrite it: "
        f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, 'T', ' ')"
    ) in str(caught.value)
    assert store.list_keys() == [] and not any(p.exists() for p in state.paths(SOILMET))

    with engine.begin() as conn:  # the fix the line gives
        conn.execute(sa.text(f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, 'T', ' ')"))
    engine.dispose()
    assert export(url, store, state).rows_read == 4
    seed(url, {"ALIC1": [T0 + timedelta(hours=2)]})
    assert export(url, store, state).rows_read == 1  # not the watermark's day again


# ----------------------------------------------------- 7. no debris in the object tree


def _export_and_die_mid_write(url: str, root: str, state_dir: str, nth_fsync: int) -> None:
    """Export, dying (no cleanup, like SIGKILL) at the nth fsync: an object half written."""
    from iotswarm_pipelines import atomic

    real, calls = atomic.os.fsync, 0

    def dying(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == nth_fsync:
            os._exit(9)
        real(fd)

    atomic.os.fsync = dying
    store = LocalObjectStore(root=root, prefix=PREFIX, max_concurrency=1)
    export(url, store, StateStore(state_dir=state_dir))


def test_a_write_killed_midway_leaves_nothing_a_reader_of_the_object_tree_sees(tmp_path):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 6)})
    root = tmp_path / "objects"
    # Each object takes two fsyncs (file, folder), one at a time: the 5th is the third
    # object's, before its rename.
    child = FORK.Process(
        target=_export_and_die_mid_write, args=(url, str(root), state.state_dir, 5)
    )
    child.start()
    child.join()
    assert child.exitcode == 9

    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    in_tree = [f for f in files if not f.startswith(".partial/")]
    assert len(in_tree) == 2 and not any(f.endswith(".tmp") for f in in_tree)
    assert len(files) == 3  # the killed write's temporary, outside the key tree
    store = LocalObjectStore(root=str(root), prefix=PREFIX)
    assert store.list_keys() == sorted(in_tree)

    assert export(url, store, state).rows_read == 6
    assert list((root / ".partial").iterdir()) == []  # swept: its writer is dead
    assert set(stored_rows(store).values()) == {1} and len(store.list_keys()) == 6


# ------------------------------------------------------- 2. a row from the future


def test_a_future_dated_row_holds_its_site_loudly_and_loses_no_later_row(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    seed(url, {"ALIC1": [datetime(2030, 1, 1)]})  # a logger whose clock jumped

    with pytest.raises(ExportError) as caught:
        export(url, store, state)
    assert "1 site(s) stopped before rows they cannot send (the other sites were exported)" in (
        str(caught.value)
    )
    assert "ALIC1 has rows dated up to 2030-01-01 00:00:00, later than now plus the tolerance" in (
        str(caught.value)
    )
    marks = state.load(SOILMET)
    assert watermark(marks, "ALIC1") == watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)
    assert len(store.list_keys()) == 8

    # The row is corrected; the real rows that follow it are exported, each once.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"DELETE FROM {SOILMET} WHERE DATE_TIME >= '2030-01-01'"),
        )
    engine.dispose()
    seed(url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})
    summary = export(url, store, state)
    assert summary.rows_read == 3
    assert summary.watermarks["ALIC1"] == T0 + timedelta(hours=3)
    assert set(stored_rows(store).values()) == {1}


def test_freshness_flags_a_watermark_ahead_of_the_sources_newest_row(tmp_path):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    # The state an earlier release left: a 2030 row moved the watermark, then was corrected.
    state.advance(SOILMET, {"ALIC1": datetime(2030, 1, 1), "BALRD": T0 + timedelta(hours=1.5)})
    newest = CosmosSource(url=url).newest_times(SOILMET)

    outcome = health.freshness(SOILMET, newest, state.load(SOILMET), T0, 3.0)
    assert not outcome.passed
    assert outcome.description.startswith(
        f"{SOILMET}: the watermark of 1 site(s) is ahead of the source's newest row "
        "(ALIC1: 2030-01-01 00:00:00 > 2024-06-01 01:30:00)"
    )
    assert outcome.metadata["sites_ahead"] == 1


# ----------------------------------------------------------------- 3. poison rows


def _poison(url: str, site: str, when: datetime, column: str, value) -> None:
    table = schema.sa_table(SOILMET)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c["SITE_ID"] == site, table.c["DATE_TIME"] == when)
            .values({column: sa.literal(value, sa.LargeBinary())})  # a BLOB, unconverted
        )
    engine.dispose()


VALUE_COLUMN = next(  # a float column: SQLite hands a BLOB stored there over as bytes
    c.name for c in catalogue.get_table(SOILMET).columns if c.type is catalogue.ColumnType.FLOAT
)


def test_a_value_no_payload_carries_stops_its_site_only_until_skipped_on_record(tmp_path, caplog):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    bad_time = T0 + timedelta(hours=1)
    _poison(url, "ALIC1", bad_time, VALUE_COLUMN, b"\x00secret-bytes")

    for _ in range(2):  # every rerun: the same one line, the other site unharmed
        with pytest.raises(ExportError) as caught:
            export(url, store, state)
        message = str(caught.value)
        assert (
            f"ALIC1 at 2024-06-01 01:00:00: column {VALUE_COLUMN} holds a bytes value, which no "
            "payload carries; correct the row, or skip it with skip_rows: "
            "['ALIC1@2024-06-01T01:00:00']"
        ) in message
        assert "secret" not in message
        marks = state.load(SOILMET)
        assert watermark(marks, "ALIC1") == T0 + timedelta(minutes=30)
        assert watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)

    with caplog.at_level(logging.WARNING):
        summary = export(url, store, state, skip_rows=["ALIC1@2024-06-01T01:00"])
    assert summary.skipped_rows == ["ALIC1@2024-06-01T01:00:00"]
    assert "skipped ALIC1@2024-06-01T01:00:00 as skip_rows asks" in caplog.text
    assert summary.watermarks["ALIC1"] == T0 + timedelta(hours=1.5)
    assert (("ALIC1", bad_time) not in stored_rows(store)) and len(store.list_keys()) == 7


def test_an_unreadable_date_time_stops_its_site_only_named_without_its_value(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # sorts between 00:30 and 01:00, cannot be a datetime
        conn.execute(
            sa.text(
                f"UPDATE {SOILMET} SET DATE_TIME = '2024-06-01 00:45:99' WHERE SITE_ID = "
                "'ALIC1' AND DATE_TIME > '2024-06-01 00:31'  AND DATE_TIME < '2024-06-01 01:01'"
            )
        )
    engine.dispose()

    with pytest.raises(ExportError) as caught:
        export(url, store, state)
    message = str(caught.value)
    assert (  # the bad row fails its whole fetch: the site stops where it started
        "ALIC1 has a row that the database cannot hand over (ValueError, e.g. an unparseable "
        "DATE_TIME); correct it in the source"
    ) in message
    assert "00:45:99" not in message
    marks = state.load(SOILMET)
    assert watermark(marks, "ALIC1") is None
    assert watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)
    assert {site for site, _ in stored_rows(store)} == {"BALRD"}


def test_skipped_rows_are_recorded_in_the_runs_metadata(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 3)})
    _poison(url, "ALIC1", T0 + timedelta(minutes=30), VALUE_COLUMN, b"\x01")
    result = dg.materialize(
        [cosmos_live_export],
        partition_key=SOILMET,
        resources={"cosmos": CosmosSource(url=url), "object_store": store, "state": state},
        run_config={
            "ops": {
                cosmos_live_export.op.name: {
                    "config": {"fallback_hours": 438000, "skip_rows": ["ALIC1@2024-06-01T00:30"]}
                }
            }
        },
    )
    [event] = result.asset_materializations_for_node(cosmos_live_export.op.name)
    assert event.metadata["skipped_rows"].value == ["ALIC1@2024-06-01T00:30:00"]
    assert event.metadata["rows_read"].value == 2


# ------------------------------------------------------------- 9. state integrity


def _rot(path, data: bytes) -> None:
    """Damage where the file lies: new bytes, the same modification time (no tool wrote it)."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_every_single_bit_flip_of_the_main_state_is_detected_and_the_backup_used(tmp_path):
    state = state_store(tmp_path)
    good = {site: T0 + timedelta(hours=i, minutes=7 * i) for i, site in enumerate(SITES3)}
    state.advance(SOILMET, good)
    main, backup = state.paths(SOILMET)
    expected, original = state.load(SOILMET), main.read_bytes()
    assert main.with_name(main.name + ".sha256").exists()

    def flipped(bit: int) -> bytes:
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)

    different = 0
    for bit in range(len(original) * 8):
        _rot(main, flipped(bit))
        content = state.copies(SOILMET)[0].content  # main as read, nothing rewritten
        different += isinstance(content, dict) and content != expected
    assert different == 0  # before the checksum: 405 of 1672 flips loaded as another state

    _rot(main, flipped(len(original) * 4))
    assert state.load(SOILMET) == expected  # from the backup, which then rewrites main
    assert main.read_bytes() == original == backup.read_bytes()


def test_both_tools_still_read_each_others_state_files(tmp_path):
    state = state_store(tmp_path)
    state.advance(SOILMET, {"ALIC1": T0})
    main, backup = state.paths(SOILMET)
    # The older tool reads ours: a plain pickle of the same dict, the sidecar beside it ignored.
    assert (
        pickle.loads(main.read_bytes())
        == pickle.loads(backup.read_bytes())
        == ({"last_run": T0, "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": T0}}})
    )
    # The older tool rewrites ours later (its file is newer than our sidecar): trusted.
    sidecar = main.with_name(main.name + ".sha256")
    stamp = sidecar.stat().st_mtime_ns
    later = {
        "last_run": T0 + timedelta(hours=1),
        "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": T0 + timedelta(hours=1)}},
    }
    main.write_bytes(pickle.dumps(later))
    os.utime(main, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))
    assert watermark(state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=1)
    # A state written only by the older tool (no sidecar at all) loads as before.
    fresh = state_store(tmp_path / "old-tool")
    old_main, _ = fresh.paths(SOILMET)
    old_main.parent.mkdir(parents=True)
    old_main.write_bytes(pickle.dumps(later, protocol=2))
    assert watermark(fresh.load(SOILMET), "ALIC1") == T0 + timedelta(hours=1)


# ------------------------------------------------------------ 4. a silent S3 endpoint


def silent_s3(proxy: str, bucket: str, **options):
    return s3_on(proxy, bucket, read_timeout_seconds=1, max_attempts=2, **options)


def test_an_endpoint_that_never_answers_is_named_by_the_bucket_check(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang=True)
    with fault_proxy(s3_endpoint, plan) as proxy, pytest.raises(StoreUnavailableError) as caught:
        export(url, silent_s3(proxy, bucket), state)
    assert "ReadTimeoutError: Read timeout on endpoint URL" in str(caught.value)
    assert not any(p.exists() for p in state.paths(SOILMET))


def test_a_store_that_falls_silent_mid_run_stops_the_run_after_failures_in_a_row(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 40)})
    healthy = new_bucket(s3_endpoint)
    plan = FaultPlan(fail_first=0, hang_after=1)  # the bucket check is answered, then silence
    with fault_proxy(s3_endpoint, plan) as proxy:
        store = silent_s3(proxy, healthy.bucket, max_concurrency=2, stop_after_failures=2)
        with pytest.raises(ExportError) as caught:
            export(url, store, state)
    message = str(caught.value)
    assert "ReadTimeoutError" in message
    assert "2 uploads failed in a row (last: ReadTimeoutError" in message
    assert "stopped sending" in message
    assert caught.value.summary.payloads_built < 40  # the rest was not even read
    assert watermark(state.load(SOILMET), "ALIC1") is None

    assert export(url, healthy, state).rows_read == 40
    assert set(stored_rows(healthy).values()) == {1}


CTRL_C_EXPORT = """
import sys
from dagster_aws.s3 import S3Resource
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import S3ObjectStore
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_pipelines.export.state_store import StateStore
endpoint, bucket, url, state_dir = sys.argv[1:5]
store = S3ObjectStore(s3=S3Resource(endpoint_url=endpoint, region_name="eu-west-2"),
                      bucket=bucket, read_timeout_seconds=60, max_attempts=8)
export_table("LEVEL1_SOILMET_30MIN", source=CosmosSource(url=url), store=store,
             state=StateStore(state_dir=state_dir), fallback_hours=None)
"""


def test_ctrl_c_stops_an_export_stuck_on_a_silent_endpoint_at_once(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 8)})
    bucket = new_bucket(s3_endpoint).bucket
    plan = FaultPlan(fail_first=0, hang_after=1)
    with fault_proxy(s3_endpoint, plan) as proxy:
        export_process = subprocess.Popen(
            [sys.executable, "-c", CTRL_C_EXPORT, proxy, bucket, url, state.state_dir],
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
    assert watermark(state.load(SOILMET), "ALIC1") is None


LOCK_HOLDER = """
import sys
from iotswarm_pipelines.export.state_store import StateStore
with StateStore(state_dir=sys.argv[1]).locked("LEVEL1_SOILMET_30MIN"):
    print("held", flush=True)
    sys.stdin.read()
"""


class _Heard(logging.Handler):
    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.lines, self.event = wanted, [], threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted in record.getMessage():
            self.lines.append(record.getMessage())
            self.event.set()


def test_an_export_waiting_for_the_table_lock_says_who_holds_it(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 2)})
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, state.state_dir],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    heard = _Heard("waiting for the lock of")
    log = logging.getLogger("iotswarm-test-lock-wait")
    log.addHandler(heard)
    try:
        assert holder.stdout.readline() == "held\n"
        waiting = threading.Thread(target=lambda: export(url, store, state, log=log))
        waiting.start()
        assert heard.event.wait(timeout=60)
        assert waiting.is_alive()  # it waits; it has not exported around the lock
        holder.stdin.close()  # the holder finishes
        waiting.join(timeout=60)
    finally:
        holder.kill()
        log.removeHandler(heard)
    [line] = heard.lines
    assert line.startswith(
        f"waiting for the lock of {SOILMET} held by {holder.pid}/{socket.gethostname()} since "
    )
    assert line.endswith(" UTC")
    assert len(store.list_keys()) == 2
