"""Fault injection for the export: crashes, corrupt state, late rows, S3 and database faults.

Each test breaks something real (a SIGKILLed process, state files on disk, a proxy in front of
the moto S3 server, a PostgreSQL backend terminated mid-stream) and then checks the one promise
that matters: the stored objects are exactly the objects the source rows imply, each row in
exactly one object, and no watermark ahead of what is stored. RELIABILITY.md maps issue 5 here.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest
from dagster_aws.s3 import S3Resource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource, dispose_engines
from iotswarm_pipelines.export.object_store import ObjectStore, PutResult, S3ObjectStore
from iotswarm_pipelines.export.pipeline import ExportError, build_objects, export_table
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.store_errors import StateRecoveryError
from iotswarm_pipelines.export.watermarks import aligned_batches, newest_time
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
from iotswarm_tests.services import terminate_other_backends

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 6, 1)
REGION = "eu-west-2"


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    """Every test's databases are new, so pooled connections must not outlive the test."""
    yield
    dispose_engines()


def half_hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=30 * i) for i in range(count)]


def seed(url: str, sites: dict[str, list[datetime]]) -> None:
    for site, times in sites.items():
        insert_rows(url, SOILMET, make_rows(SOILMET, site, times))


def export(url: str, store: ObjectStore, state: StateStore, **kwargs):
    kwargs.setdefault("source", CosmosSource(url=url, retry_backoff_seconds=0.01))
    return export_table(SOILMET, store=store, state=state, fallback_hours=None, **kwargs)


def expected_objects(url: str, batch_size: int = 1) -> dict[str, list[dict]]:
    """Key -> rows of every payload the source's rows imply (``aligned_batches``)."""
    source = CosmosSource(url=url)
    spec = catalogue.get_table(SOILMET)
    newest = source.newest_times(SOILMET)
    rows = (row for site in sorted(newest) for row in source.rows_after(SOILMET, site, None))
    batches = aligned_batches(rows, batch_size, spec.cadence, newest)
    return {key: batch for key, _, batch in build_objects(spec, PREFIX, batches)}


def stored_rows(store: ObjectStore) -> Counter:
    """How many stored objects hold each (site, time): every count must be 1."""
    found: Counter = Counter()
    for key in store.list_keys():
        payload = json.loads(store.get(key))
        site = payload["head"]["environment"]["station_name"]
        found.update((site, datetime.fromisoformat(row["time"])) for row in payload["data"])
    return found


def assert_exactly_the_expected_objects(url: str, store: ObjectStore, batch_size: int = 1) -> None:
    expected = expected_objects(url, batch_size)
    keys = store.list_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) == set(expected)
    rows = stored_rows(store)
    assert all(count == 1 for count in rows.values())
    assert set(rows) == {(r["SITE_ID"], r["DATE_TIME"]) for b in expected.values() for r in b}


def assert_watermarks_not_ahead(
    url: str, store: ObjectStore, state: StateStore, batch_size: int = 1
) -> None:
    """Every payload at or before a site's watermark is stored."""
    stored = set(store.list_keys())
    current = state.load(SOILMET)
    for key, batch in expected_objects(url, batch_size).items():
        mark = watermark(current, batch[0]["SITE_ID"])
        if mark is not None and newest_time(batch) <= mark:
            assert key in stored, f"watermark {mark} is ahead of the unstored {key}"


def new_bucket(endpoint: str) -> S3ObjectStore:
    bucket = f"iotswarm-rel-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return s3_on(endpoint, bucket)


def s3_on(endpoint: str, bucket: str, **options) -> S3ObjectStore:
    return S3ObjectStore(
        s3=S3Resource(endpoint_url=endpoint, region_name=REGION),
        bucket=bucket,
        prefix=PREFIX,
        **options,
    )


class HookedStore:
    """Runs ``hook(n)`` in the export's thread after it hands over its nth object."""

    def __init__(self, inner: ObjectStore, hook) -> None:
        self.inner = inner
        self.prefix = inner.prefix
        self.hook = hook

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        def counted() -> Iterator[tuple[str, bytes]]:
            for n, item in enumerate(objects, start=1):
                yield item
                self.hook(n)

        return self.inner.put_many(counted())

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.inner.list_keys(prefix)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def check(self) -> None:
        self.inner.check()

    def describe(self) -> str:
        return self.inner.describe()


# ------------------------------------------------------------------- 1. SIGKILL mid-upload


@pytest.mark.parametrize(
    ("backend", "earlier_run"),
    [("local", False), ("s3", False), ("local", True)],
    ids=["local", "s3", "local-after-an-earlier-run"],
)
def test_sigkill_after_nth_object_then_rerun_stores_each_key_once(
    request, tmp_path, backend, earlier_run
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    spec = {"url": url, "table": SOILMET, "state_dir": state.state_dir, "stop_after": 5}
    if backend == "local":
        store = local_store(tmp_path)
        spec["root"] = str(tmp_path / "objects")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        request.getfixturevalue("aws_test_credentials")
        store = new_bucket(endpoint)
        spec |= {"endpoint": endpoint, "bucket": store.bucket}
    if earlier_run:
        seed(url, {site: half_hours(T0 - timedelta(hours=2), 4) for site in ("ALIC1", "BALRD")})
        export(url, store, state)
    before = {p: p.read_bytes() for p in state.paths(SOILMET) if p.exists()}
    seed(url, {site: half_hours(T0, 8) for site in ("ALIC1", "BALRD")})
    stored_before = len(store.list_keys())

    worker = subprocess.Popen(
        [sys.executable, "-m", "iotswarm_tests.reliability_export_worker", json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline() == "stored 5\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL
    assert {p: p.read_bytes() for p in state.paths(SOILMET) if p.exists()} == before
    assert len(store.list_keys()) == stored_before + 5

    summary = export(url, store, state)
    assert summary.failed == 0 and summary.rows_read == 16  # the watermarks had not moved
    assert_exactly_the_expected_objects(url, store)
    assert export(url, store, state).rows_read == 0


# ------------------------------------------------------------- 3/4. corrupt state files


def flip_bit_in_structure(data: bytes) -> bytes:
    """One bit of the ``sites`` key flipped (``sites`` -> ``sitgs``): a broken structure.

    A flip inside a datetime's bytes can make another valid datetime; the file format is the old
    uploader's plain pickle, so it has no checksum that could tell (see RELIABILITY.md).
    """
    at = data.index(b"sites") + 3
    return data[:at] + bytes([data[at] ^ 0x02]) + data[at + 1 :]


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def corruptions(good: bytes, marker: Path) -> dict[str, bytes]:
    return {
        "truncated": good[: len(good) // 2],
        "zero-length": b"",
        "bit-flipped": flip_bit_in_structure(good),
        "wrong-structure": pickle.dumps({"last_run": None, "sites": ["ALIC1"]}),
        "os-system-pickle": pickle.dumps({"last_run": _System(marker), "sites": {}}),
    }


@pytest.mark.parametrize(
    "kind", ["truncated", "zero-length", "bit-flipped", "wrong-structure", "os-system-pickle"]
)
def test_corrupt_main_state_export_uses_the_backup(tmp_path, kind):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    export(url, store, state)
    main, backup = state.paths(SOILMET)
    marker = tmp_path / "os-system-ran"
    main.write_bytes(corruptions(main.read_bytes(), marker)[kind])
    seed(url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})

    summary = export(url, store, state)
    assert summary.rows_read == 3  # from the backup's watermark, not from scratch
    assert not marker.exists()
    assert pickle.loads(main.read_bytes()) == pickle.loads(backup.read_bytes())
    assert watermark(state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=3)
    assert_exactly_the_expected_objects(url, store)


@pytest.mark.parametrize(
    ("main_kind", "backup_kind"),
    [
        ("truncated", "zero-length"),
        ("bit-flipped", "wrong-structure"),
        ("os-system-pickle", "truncated"),
        (None, "zero-length"),
        (None, "os-system-pickle"),
    ],
    ids=["both-truncated", "both-bad-structure", "both-bad-evil", "no-main-empty", "no-main-evil"],
)
def test_untrustworthy_state_fails_the_export_and_stores_nothing(tmp_path, main_kind, backup_kind):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path / "first"), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    export(url, store, state)
    main, backup = state.paths(SOILMET)
    marker = tmp_path / "os-system-ran"
    bad = corruptions(main.read_bytes(), marker)
    main.unlink()
    if main_kind:
        main.write_bytes(bad[main_kind])
    backup.write_bytes(bad[backup_kind])
    seed(url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})
    files = {p: p.read_bytes() for p in (main, backup) if p.exists()}

    after = local_store(tmp_path / "after")
    with pytest.raises(StateRecoveryError, match="cannot load the export state") as caught:
        export(url, after, state)
    assert str(backup) in str(caught.value) and "restore" in str(caught.value)
    assert after.list_keys() == []
    assert {p: p.read_bytes() for p in (main, backup) if p.exists()} == files  # no silent reset
    assert not marker.exists()


# ------------------------------------------------------------------------- 6. late rows


def test_late_backlog_of_one_site_is_exported_by_the_next_run(tmp_path):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(
        url, {"ALIC1": half_hours(T0, 10), "BALRD": half_hours(T0, 10), "CHIMN": half_hours(T0, 3)}
    )
    export(url, store, state)
    # CHIMN's logger catches up: rows older than the other sites' watermarks, newer than its own.
    backlog = half_hours(T0 + timedelta(hours=1, minutes=30), 4)
    assert backlog[-1] < watermark(state.load(SOILMET), "ALIC1")
    seed(url, {"CHIMN": backlog})

    summary = export(url, store, state)
    assert summary.rows_read == 4
    assert summary.watermarks["CHIMN"] == backlog[-1]
    assert_exactly_the_expected_objects(url, store)


# ---------------------------------------------------------- 7. S3 that never recovers


def test_s3_that_never_recovers_fails_the_run_and_the_rerun_completes(
    tmp_path, s3_endpoint, aws_test_credentials
):
    url, state = sqlite_url(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 12)})
    healthy = new_bucket(s3_endpoint)
    plan = FaultPlan(fail_first=0, status=503, code="SlowDown")

    def break_for_good(n: int) -> None:
        if n == 6:
            plan.fail_first = None  # from now on every request fails

    with fault_proxy(s3_endpoint, plan) as proxy:
        failing = s3_on(proxy, healthy.bucket, max_concurrency=1, max_attempts=2)
        with pytest.raises(ExportError, match=r"of 12 payloads were not stored after retries"):
            export(url, HookedStore(failing, break_for_good), state)
    assert plan.failures > 0
    stored = healthy.list_keys()
    mark = watermark(state.load(SOILMET), "ALIC1")
    assert mark is not None and 4 <= len(stored) < 12
    # The watermark is the newest row of the last stored payload, with every earlier one stored.
    expected = expected_objects(url)
    assert set(stored) == {k for k, rows in expected.items() if newest_time(rows) <= mark}

    summary = export(url, healthy, state)
    assert summary.rows_read == 12 - len(stored)
    assert_exactly_the_expected_objects(url, healthy)


# ------------------------------------------------------ 8. database connection killed


@pytest.mark.parametrize("retries", [3, 0], ids=["retried", "no-retries-left"])
def test_killed_database_connection_mid_export(tmp_path, pg_url, retries):
    seed(pg_url, {site: half_hours(T0, 20) for site in ("ALIC1", "BALRD")})
    store, state = local_store(tmp_path), state_store(tmp_path)
    killed = []

    def kill_connection(n: int) -> None:
        if n == 25:  # BALRD's stream is half read
            killed.append(terminate_other_backends(pg_url))

    source = CosmosSource(url=pg_url, chunk_rows=3, retries=retries, retry_backoff_seconds=0.01)
    hooked = HookedStore(store, kill_connection)
    if retries:
        summary = export(pg_url, hooked, state, source=source)
        assert summary.rows_read == 40 and summary.failed == 0
    else:
        with pytest.raises(SourceError, match="terminating connection"):
            export(pg_url, hooked, state, source=source)
        assert_watermarks_not_ahead(pg_url, store, state)
        assert watermark(state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=9, minutes=30)
        assert watermark(state.load(SOILMET), "BALRD") < T0 + timedelta(hours=9, minutes=30)
        export(pg_url, store, state)
    assert killed and killed[0] >= 1
    assert_exactly_the_expected_objects(pg_url, store)


# ------------------------------------------- 9. random inserts, crashes, retries, reruns


class Crash(BaseException):
    """A process dying: not an Exception, so nothing on the way catches it."""


class CrashingState:
    """A state store whose saves die once the run has crashed, like a killed process."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.crashed = False

    def load(self, table):
        return self.inner.load(table)

    def save(self, table, state) -> None:
        if self.crashed:
            raise Crash("died before the state was written")
        self.inner.save(table, state)

    def locked(self, table, timeout=None):
        return self.inner.locked(table, timeout)


class FailingStore(HookedStore):
    """Stores ``ok`` objects, then either crashes the run or fails every later upload."""

    def __init__(self, inner: ObjectStore, ok: int, mode: str, state: CrashingState) -> None:
        super().__init__(inner, hook=lambda n: None)
        self.ok, self.mode, self.state = ok, mode, state

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        for n, (key, body) in enumerate(objects, start=1):
            if n > self.ok:
                if self.mode == "fail":
                    yield PutResult(key, len(body), "SlowDown (HTTP 503) after 8 attempt(s)")
                    continue
                if self.mode == "raise":  # an error the export sees: it keeps what is safe
                    raise RuntimeError(f"failed after {self.ok} objects")
                self.state.crashed = True
                raise Crash(f"killed after {self.ok} objects")
            yield from self.inner.put_many([(key, body)])


SITES = ("ALIC1", "BALRD", "CHIMN")
steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.sampled_from(SITES), st.integers(1, 5)),
        st.tuples(
            st.just("run"), st.sampled_from(["ok", "fail", "kill", "raise"]), st.integers(0, 6)
        ),
    ),
    min_size=1,
    max_size=8,
)


CASES = {"upper": str.upper, "lower": str.lower, "mixed": lambda site: site[:1] + site[1:].lower()}
"""How a site ID may be spelt, in the source and in the configured ``sites`` (issue 25)."""


@pytest.mark.parametrize("batch_size", [1, 2, 7, 48])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=steps,
    stored_case=st.sampled_from(sorted(CASES)),
    configured_case=st.sampled_from([None, *sorted(CASES)]),
)
def test_random_inserts_crashes_and_reruns_store_every_row_once(
    batch_size, steps, stored_case, configured_case
):
    """With any batch_size: payloads are aligned to the cadence, so a crash after a partial
    batch followed by new rows never regroups rows already stored under another key. Site IDs
    are stored and configured in upper, lower or mixed case: the stored IDs are read."""
    rows_per_insert = max(1, batch_size // 4)  # enough rows to close 48-row batches
    stored = {site: CASES[stored_case](site) for site in SITES}
    sites = None if configured_case is None else [CASES[configured_case](s) for s in SITES]
    with tempfile.TemporaryDirectory(prefix="iotswarm-rel-") as folder:
        tmp = Path(folder)
        url, store, state = sqlite_url(tmp), local_store(tmp), state_store(tmp)
        insert_rows(url, SOILMET, [])
        # Each site's rows arrive oldest first, but sites lag one another by hours (late rows).
        latest = {site: T0 + timedelta(hours=3 * i) for i, site in enumerate(SITES)}
        for step in steps:
            if step[0] == "insert":
                _, site, count = step
                times = half_hours(latest[site] + timedelta(minutes=30), count * rows_per_insert)
                latest[site] = times[-1]
                seed(url, {stored[site]: times})
                continue
            _, mode, ok = step
            crashing = CrashingState(state)
            store_now = store if mode == "ok" else FailingStore(store, ok, mode, crashing)
            with contextlib.suppress(Crash, ExportError, RuntimeError):
                export(url, store_now, crashing, batch_size=batch_size, sites=sites)
            assert_watermarks_not_ahead(url, store, state, batch_size)
        export(url, store, state, batch_size=batch_size, sites=sites)  # the final rerun
        assert_exactly_the_expected_objects(url, store, batch_size)
        dispose_engines()


# ------------------------------------------------- 2. killed at each step of a state save

FORK = multiprocessing.get_context("fork")  # the child shares the imported modules: fast
SAVE_STEPS = [  # each copy is written, then its checksum sidecar
    ("fsync", 1, "main temporary written, before its fsync"),
    ("replace", 1, "main temporary fsynced, before the rename"),
    ("fsync", 2, "main renamed, before the folder fsync"),
    ("replace", 2, "main's checksum sidecar fsynced, before its rename"),
    ("fsync", 5, "backup temporary written, before its fsync"),
    ("replace", 3, "backup temporary fsynced, before the rename"),
    ("fsync", 6, "backup renamed, before the folder fsync"),
    ("replace", 4, "backup's checksum sidecar fsynced, before its rename"),
]


def _export_and_die_at(url: str, root: str, state_dir: str, call: str, nth: int) -> None:
    """Export, but die (no cleanup, like SIGKILL) at the nth ``os.<call>`` of the state save."""
    from iotswarm_pipelines import atomic

    real = getattr(os, call)
    calls = 0

    def dying(*args):
        nonlocal calls
        calls += 1
        if calls == nth:
            os._exit(9)
        return real(*args)

    save = StateStore.save

    def save_and_die(self, table, new_state) -> None:
        setattr(atomic.os, call, dying)  # the objects are stored by now: count only the save
        save(self, table, new_state)

    StateStore.save = save_and_die
    export(url, local_store(Path(root)), StateStore(state_dir=state_dir))


@pytest.mark.parametrize(
    ("call", "nth"), [s[:2] for s in SAVE_STEPS], ids=[s[2] for s in SAVE_STEPS]
)
def test_killed_during_the_state_save_leaves_old_or_new_state_and_the_next_run_loads(
    tmp_path, call, nth
):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    export(url, store, state)
    old = state.load(SOILMET)
    seed(url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})

    child = FORK.Process(
        target=_export_and_die_at, args=(url, str(tmp_path), state.state_dir, call, nth)
    )
    child.start()
    child.join()
    assert child.exitcode == 9
    new_mark = T0 + timedelta(hours=3)
    files = [pickle.loads(p.read_bytes()) for p in state.paths(SOILMET)]
    assert all(
        watermark(f, "ALIC1") in (old["sites"]["ALIC1"]["last_data"], new_mark) for f in files
    )
    assert len(store.list_keys()) == 7  # the objects were stored before the save began

    summary = export(url, store, state)
    assert summary.rows_read == (0 if watermark(files[0], "ALIC1") == new_mark else 3)
    assert watermark(state.load(SOILMET), "ALIC1") == new_mark
    assert_exactly_the_expected_objects(url, store)


class CountingState(CrashingState):
    """Counts the state saves of a run."""

    saves = 0

    def save(self, table, state) -> None:
        self.saves += 1
        super().save(table, state)


@pytest.mark.parametrize("after_forwarding", [False, True], ids=["503-slowdown", "500-after-store"])
def test_s3_faults_that_recover_store_one_object_per_payload_and_advance_once(
    tmp_path, s3_endpoint, aws_test_credentials, after_forwarding
):
    url = sqlite_url(tmp_path)
    seed(url, {site: half_hours(T0, 6) for site in ("ALIC1", "BALRD")})
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
        summary = export(url, s3_on(proxy, healthy.bucket, max_concurrency=3), state)
    assert plan.failures == 8 and summary.failed == 0  # the bucket check met the first one
    assert state.saves == 1
    assert summary.watermarks == dict.fromkeys(
        ("ALIC1", "BALRD"), T0 + timedelta(hours=2, minutes=30)
    )
    assert_exactly_the_expected_objects(url, healthy)
    pages = (
        boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
        .get_paginator("list_object_versions")
        .paginate(Bucket=healthy.bucket)
    )
    versions = Counter(v["Key"] for page in pages for v in page.get("Versions", ()))
    # A 500 after the server stored the object makes the retry write the same key again (7
    # times: the bucket check's HEAD, not retried, met the first failure and let the run go on).
    assert sum(versions.values()) == 12 + (7 if after_forwarding else 0)
