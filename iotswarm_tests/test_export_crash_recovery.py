"""A killed export loses and repeats nothing: SIGKILL after the Nth stored object, death at each
step of the state save or half way through writing an object, random crashes between inserts.

Each test kills a real process (or a forked child) and checks the promise that matters: the
rerun stores exactly the objects the source rows imply, each row in one object, and no
watermark is ever ahead of what is stored.
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
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import dispose_engines
from iotswarm_pipelines.export.object_store import LocalObjectStore, ObjectStore, PutResult
from iotswarm_pipelines.export.pipeline import ExportError
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_tests.delegating_store import DelegatingStore
from iotswarm_tests.export_faults import (
    ROOT,
    T0,
    Crash,
    CrashingState,
    assert_exactly_the_expected_objects,
    assert_watermarks_not_ahead,
    export,
    half_hours,
    new_bucket,
    seed,
    stored_rows,
)
from iotswarm_tests.export_fixtures import (
    PREFIX,
    SOILMET,
    insert_rows,
    local_store,
    sqlite_url,
    state_store,
)

pytestmark = pytest.mark.usefixtures("fresh_engines")


@pytest.mark.parametrize(
    ("backend", "earlier_run"),
    [("local", False), ("s3", False), ("local", True)],
    ids=["local", "s3", "local-after-an-earlier-run"],
)
def test_sigkill_after_nth_object_then_rerun_stores_each_key_once(
    request, tmp_path, cosmos_url, local_state, backend, earlier_run
):
    spec = {
        "url": cosmos_url,
        "table": SOILMET,
        "state_dir": local_state.state_dir,
        "stop_after": 5,
    }
    if backend == "local":
        store = local_store(tmp_path)
        spec["root"] = str(tmp_path / "objects")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        request.getfixturevalue("aws_test_credentials")
        store = new_bucket(endpoint)
        spec |= {"endpoint": endpoint, "bucket": store.bucket}
    if earlier_run:
        seed(
            cosmos_url,
            {site: half_hours(T0 - timedelta(hours=2), 4) for site in ("ALIC1", "BALRD")},
        )
        export(cosmos_url, store, local_state)
    before = {p: p.read_bytes() for p in local_state.paths(catalogue.SOILMET_30MIN) if p.exists()}
    seed(cosmos_url, {site: half_hours(T0, 8) for site in ("ALIC1", "BALRD")})
    stored_before = len(store.list_keys())

    worker = subprocess.Popen(
        [sys.executable, "-m", "iotswarm_tests.killable_export", json.dumps(spec)],
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
    assert {
        p: p.read_bytes() for p in local_state.paths(catalogue.SOILMET_30MIN) if p.exists()
    } == before
    assert len(store.list_keys()) == stored_before + 5

    summary = export(cosmos_url, store, local_state)
    assert summary.failed == 0 and summary.rows_read == 16  # the watermarks had not moved
    assert_exactly_the_expected_objects(cosmos_url, store)
    assert export(cosmos_url, store, local_state).rows_read == 0


class FailingStore(DelegatingStore):
    """Stores ``ok`` objects, then either crashes the run or fails every later upload."""

    def __init__(self, inner: ObjectStore, ok: int, mode: str, state: CrashingState) -> None:
        super().__init__(inner)
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
    tmp_path, cosmos_url, local_objects, local_state, call, nth
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    export(cosmos_url, local_objects, local_state)
    old = local_state.load(catalogue.SOILMET_30MIN)
    seed(cosmos_url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})

    child = FORK.Process(
        target=_export_and_die_at,
        args=(cosmos_url, str(tmp_path), local_state.state_dir, call, nth),
    )
    child.start()
    child.join()
    assert child.exitcode == 9
    new_mark = T0 + timedelta(hours=3)
    files = [pickle.loads(p.read_bytes()) for p in local_state.paths(catalogue.SOILMET_30MIN)]
    assert all(
        watermark(f, "ALIC1") in (old["sites"]["ALIC1"]["last_data"], new_mark) for f in files
    )
    assert len(local_objects.list_keys()) == 7  # the objects were stored before the save began

    summary = export(cosmos_url, local_objects, local_state)
    assert summary.rows_read == (0 if watermark(files[0], "ALIC1") == new_mark else 3)
    assert watermark(local_state.load(catalogue.SOILMET_30MIN), "ALIC1") == new_mark
    assert_exactly_the_expected_objects(cosmos_url, local_objects)


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


def test_a_write_killed_midway_leaves_nothing_a_reader_of_the_object_tree_sees(
    tmp_path, cosmos_url, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 6)})
    root = tmp_path / "objects"
    # Each object takes two fsyncs (file, folder), one at a time: the 5th is the third
    # object's, before its rename.
    child = FORK.Process(
        target=_export_and_die_mid_write, args=(cosmos_url, str(root), local_state.state_dir, 5)
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

    assert export(cosmos_url, store, local_state).rows_read == 6
    assert list((root / ".partial").iterdir()) == []  # swept: its writer is dead
    assert set(stored_rows(store).values()) == {1} and len(store.list_keys()) == 6
