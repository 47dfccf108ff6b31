"""State files on disk: recovery rules, crash-safe writes and the per-table process lock."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines import atomic
from iotswarm_pipelines.export.state import empty_state, watermark
from iotswarm_pipelines.export.state_store import StateLockedError, StateRecoveryError, StateStore

TABLE = "LEVEL1_SOILMET_30MIN"
T0 = datetime(2024, 6, 1, 0, 30)
FORK = multiprocessing.get_context("fork")  # children share the imported modules: fast to start


def state_at(when: datetime, site: str = "ALIC1") -> dict:
    return {"last_run": when, "sites": {site: {"site_id": site, "last_data": when}}}


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(state_dir=str(tmp_path / "state"))


def write_old_tool_file(path: Path, state: dict) -> None:
    """What the existing uploader does: a plain pickle.dump of the dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(state, f)


def test_paths_use_the_database_spelling(store):
    main, backup = store.paths("level_1_soilmet_30min")
    assert (main.name, backup.name) == (f"{TABLE}.pickle", f"{TABLE}.pickle.backup")
    assert main.parent == Path(store.state_dir)


def test_default_state_dir_is_the_livecosmos_user_state_dir():
    assert StateStore().state_dir.endswith("livecosmos")


def test_no_files_is_an_empty_state_and_creates_nothing(store):
    assert store.load(TABLE) == empty_state()
    assert not Path(store.state_dir).exists()


def test_save_writes_both_files_with_the_same_state(store):
    store.save(TABLE, state_at(T0))
    main, backup = store.paths(TABLE)
    assert pickle.loads(main.read_bytes()) == state_at(T0)
    assert main.read_bytes() == backup.read_bytes()
    assert store.load(TABLE) == state_at(T0)


def test_existing_tool_files_load_unchanged(store):
    main, backup = store.paths(TABLE)
    write_old_tool_file(main, state_at(T0))
    write_old_tool_file(backup, state_at(T0))
    assert store.load(TABLE) == state_at(T0)


def test_older_spelling_is_read_and_the_new_one_written(store):
    folder = Path(store.state_dir)
    write_old_tool_file(folder / "LEVEL_1_SOILMET_30MIN.pickle", state_at(T0))
    assert store.load(TABLE) == state_at(T0)
    store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=1)})
    assert store.load(TABLE)["sites"]["ALIC1"]["last_data"] == T0 + timedelta(hours=1)
    assert pickle.loads(store.paths(TABLE)[1].read_bytes()) == store.load(TABLE)


def test_corrupt_main_falls_back_to_backup_and_rewrites_main(store):
    store.save(TABLE, state_at(T0))
    main, _ = store.paths(TABLE)
    main.write_bytes(b"\x80\x04garbage")
    assert store.load(TABLE) == state_at(T0)
    assert pickle.loads(main.read_bytes()) == state_at(T0)


def test_missing_main_falls_back_to_backup_and_rewrites_main(store):
    store.save(TABLE, state_at(T0))
    main, _ = store.paths(TABLE)
    main.unlink()
    assert store.load(TABLE) == state_at(T0)
    assert pickle.loads(main.read_bytes()) == state_at(T0)


def test_forbidden_pickle_in_main_uses_backup(store, tmp_path):
    store.save(TABLE, state_at(T0))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    store.paths(TABLE)[0].write_bytes(pickle.dumps({"last_run": Evil(), "sites": {}}))
    assert store.load(TABLE) == state_at(T0)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("main_bytes", "backup_bytes", "main_says", "backup_says"),
    [
        (None, b"", "is missing", "is corrupt"),
        (b"junk", b"", "is corrupt", "is corrupt"),
        (b"junk", None, "is corrupt", "is missing"),
    ],
    ids=["main-missing-backup-corrupt", "both-corrupt", "main-corrupt-backup-missing"],
)
def test_no_trustworthy_file_fails_naming_both_and_how_to_recover(
    store, main_bytes, backup_bytes, main_says, backup_says
):
    main, backup = store.paths(TABLE)
    main.parent.mkdir(parents=True)
    for path, data in ((main, main_bytes), (backup, backup_bytes)):
        if data is not None:
            path.write_bytes(data)
    with pytest.raises(StateRecoveryError) as caught:
        store.load(TABLE)
    message = str(caught.value)
    assert f"{main} {main_says}" in message
    assert f"{backup} {backup_says}" in message
    assert "restore" in message
    assert "delete both" in message
    assert "fallback_hours" in message


def test_leftover_temporary_file_from_a_crashed_write_is_ignored(store):
    store.save(TABLE, state_at(T0))
    main, backup = store.paths(TABLE)
    leftover = main.parent / f".{main.name}.abc123.tmp"
    leftover.write_bytes(b"\x80\x04half a pick")
    assert store.load(TABLE) == state_at(T0)
    store.save(TABLE, state_at(T0 + timedelta(hours=1)))
    assert store.load(TABLE) == state_at(T0 + timedelta(hours=1))
    assert pickle.loads(backup.read_bytes()) == state_at(T0 + timedelta(hours=1))


def _save_and_die_at_write(state_dir: str, state: dict, die_at: int) -> None:
    """Save, but kill the process (no cleanup) as the ``die_at``-th file is about to be renamed."""
    calls = 0
    real_replace = os.replace

    def replace(src, dst):
        nonlocal calls
        calls += 1
        if calls == die_at:
            os._exit(9)
        real_replace(src, dst)

    atomic.os.replace = replace
    StateStore(state_dir=state_dir).save(TABLE, state)


@pytest.mark.parametrize(
    ("die_at", "main_after", "backup_after"),
    [(1, T0, T0), (2, T0 + timedelta(hours=1), T0)],
    ids=["crash-before-main-rename", "crash-between-main-and-backup"],
)
def test_a_process_killed_mid_save_leaves_both_files_loadable(
    store, die_at, main_after, backup_after
):
    store.save(TABLE, state_at(T0))
    child = FORK.Process(
        target=_save_and_die_at_write,
        args=(store.state_dir, state_at(T0 + timedelta(hours=1)), die_at),
    )
    child.start()
    child.join()
    assert child.exitcode == 9
    main, backup = store.paths(TABLE)
    assert list(main.parent.glob(".*.tmp")), "the killed writer left its temporary file"
    assert pickle.loads(main.read_bytes()) == state_at(main_after)
    assert pickle.loads(backup.read_bytes()) == state_at(backup_after)
    assert store.load(TABLE) == state_at(main_after)


def _hold_lock(state_dir: str, held, release) -> None:
    with StateStore(state_dir=state_dir).locked(TABLE):
        held.set()
        release.wait(60)


def test_lock_excludes_another_process(store):
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_lock, args=(store.state_dir, held, release))
    holder.start()
    try:
        assert held.wait(60)
        with (
            pytest.raises(StateLockedError, match=r"LEVEL1_SOILMET_30MIN\.lock"),
            store.locked(TABLE, timeout=0),
        ):
            pass
        with store.locked("LEVEL1_NMDB_1HOUR", timeout=0):
            pass  # other tables are not blocked
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    with store.locked(TABLE, timeout=0):
        pass


def _advance_many(state_dir: str, site: str, count: int) -> None:
    store = StateStore(state_dir=state_dir)
    for step in range(1, count + 1):
        store.advance(TABLE, {site: T0 + timedelta(minutes=30 * step)})


def test_concurrent_advances_from_two_processes_lose_no_update(store):
    count = 25
    workers = [
        FORK.Process(target=_advance_many, args=(store.state_dir, site, count))
        for site in ("ALIC1", "BALRD")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    final = store.load(TABLE)
    for site in ("ALIC1", "BALRD"):
        assert watermark(final, site) == T0 + timedelta(minutes=30 * count)


def test_advance_never_moves_a_watermark_back(store):
    store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=2)})
    state = store.advance(TABLE, {"ALIC1": T0})
    assert watermark(state, "ALIC1") == T0 + timedelta(hours=2)
    assert watermark(store.load(TABLE), "ALIC1") == T0 + timedelta(hours=2)


def test_lock_is_reentrant_in_its_thread_so_an_export_can_load_and_advance(store):
    store.save(TABLE, state_at(T0))
    main, _ = store.paths(TABLE)
    main.write_bytes(b"junk")
    with store.locked(TABLE), store.locked(TABLE, timeout=0):
        assert store.load(TABLE) == state_at(T0)
        assert pickle.loads(main.read_bytes()) == state_at(T0)  # restored under our lock
        store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=1)})
    assert store.load(TABLE) == state_at(T0 + timedelta(hours=1))


def test_backup_is_not_copied_over_main_while_another_process_exports(store):
    store.save(TABLE, state_at(T0))
    main, _ = store.paths(TABLE)
    main.write_bytes(b"junk")
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_lock, args=(store.state_dir, held, release))
    holder.start()
    try:
        assert held.wait(60)
        assert store.load(TABLE) == state_at(T0)
        assert main.read_bytes() == b"junk"  # left to the export that holds the lock
    finally:
        release.set()
        holder.join(60)
    assert store.load(TABLE) == state_at(T0)
    assert pickle.loads(main.read_bytes()) == state_at(T0)


def test_lock_excludes_another_thread_of_the_same_process(store):
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.locked(TABLE):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(StateLockedError), store.locked(TABLE, timeout=0):
            pass
    finally:
        release.set()
        holder.join(60)
    with store.locked(TABLE, timeout=0):
        pass
