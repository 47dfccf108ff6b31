"""State stores: recovery rules and locks for both backends (files, S3), crash-safe local writes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines import atomic
from iotswarm_pipelines.export.state import empty_state, watermark
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.store_errors import StateLockedError, StateRecoveryError
from iotswarm_tests.state_copies import (
    BACKUP,
    MAIN,
    LocalCopies,
    S3Copies,
    hold_lock,
    make_bucket,
)

TABLE = "LEVEL1_SOILMET_30MIN"
T0 = datetime(2024, 6, 1, 0, 30)
FORK = multiprocessing.get_context("fork")  # children share the imported modules: fast to start


def state_at(when: datetime, site: str = "ALIC1") -> dict:
    return {"last_run": when, "sites": {site: {"site_id": site, "last_data": when}}}


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(state_dir=str(tmp_path / "state"))


def old_tool_bytes(state: dict) -> bytes:
    """What the existing uploader writes: a plain pickle.dump of the dict."""
    return pickle.dumps(state)


def test_paths_use_the_database_spelling(store):
    main, backup = store.paths("level_1_soilmet_30min")
    assert (main.name, backup.name) == (f"{TABLE}.pickle", f"{TABLE}.pickle.backup")
    assert main.parent == Path(store.state_dir)


def test_default_state_dir_is_the_livecosmos_user_state_dir():
    assert StateStore().state_dir.endswith("livecosmos")


# The loading and recovery rules, for every backend: local files and S3 objects.


@pytest.fixture(params=["local", "s3"])
def copies(request, tmp_path) -> LocalCopies | S3Copies:
    if request.param == "local":
        return LocalCopies(tmp_path / "state")
    endpoint = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("aws_test_credentials")
    return S3Copies(endpoint, make_bucket(endpoint))


def test_no_copies_is_an_empty_state_and_creates_nothing(copies):
    assert copies.store().load(TABLE) == empty_state()
    assert copies.names() == []


def test_save_writes_both_copies_with_the_same_state(copies):
    store = copies.store()
    store.save(TABLE, state_at(T0))
    main, backup = copies.where(TABLE), copies.where(TABLE, BACKUP)
    assert pickle.loads(copies.get(main)) == state_at(T0)
    assert copies.get(main) == copies.get(backup)
    assert copies.store().load(TABLE) == state_at(T0)


def test_existing_tool_files_load_unchanged(copies):
    for suffix in (MAIN, BACKUP):
        copies.put(copies.where(TABLE, suffix), old_tool_bytes(state_at(T0)))
    assert copies.store().load(TABLE) == state_at(T0)


def test_older_spelling_is_read_and_the_new_one_written(copies):
    legacy = copies.where("LEVEL_1_SOILMET_30MIN")
    copies.put(legacy, old_tool_bytes(state_at(T0)))
    store = copies.store()
    assert store.load(TABLE) == state_at(T0)
    store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=1)})
    assert store.load(TABLE)["sites"]["ALIC1"]["last_data"] == T0 + timedelta(hours=1)
    assert pickle.loads(copies.get(copies.where(TABLE, BACKUP))) == store.load(TABLE)
    assert pickle.loads(copies.get(legacy)) == state_at(T0)  # the old file is left as it was


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_main_falls_back_to_backup_and_rewrites_main(copies, damage):
    copies.store().save(TABLE, state_at(T0))
    main = copies.where(TABLE)
    if damage == "corrupt":
        copies.put(main, b"\x80\x04garbage")
    else:
        copies.delete(main)
    assert copies.store().load(TABLE) == state_at(T0)
    assert pickle.loads(copies.get(main)) == state_at(T0)


def test_forbidden_pickle_in_main_uses_backup(copies, tmp_path):
    copies.store().save(TABLE, state_at(T0))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    copies.put(copies.where(TABLE), pickle.dumps({"last_run": Evil(), "sites": {}}))
    assert copies.store().load(TABLE) == state_at(T0)
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
def test_no_trustworthy_copy_fails_naming_both_and_how_to_recover(
    copies, main_bytes, backup_bytes, main_says, backup_says
):
    main, backup = copies.where(TABLE), copies.where(TABLE, BACKUP)
    for where, data in ((main, main_bytes), (backup, backup_bytes)):
        if data is not None:
            copies.put(where, data)
    with pytest.raises(StateRecoveryError) as caught:
        copies.store().load(TABLE)
    message = str(caught.value)
    assert f"{copies.shown(main)} {main_says}" in message
    assert f"{copies.shown(backup)} {backup_says}" in message
    assert "restore" in message
    assert "delete both" in message
    assert "fallback_hours" in message
    assert "\n" not in message


def test_advance_never_moves_a_watermark_back(copies):
    store = copies.store()
    store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=2)})
    state = store.advance(TABLE, {"ALIC1": T0})
    assert watermark(state, "ALIC1") == T0 + timedelta(hours=2)
    assert watermark(copies.store().load(TABLE), "ALIC1") == T0 + timedelta(hours=2)


def test_lock_is_reentrant_in_its_thread_so_an_export_can_load_and_advance(copies):
    store = copies.store()
    store.save(TABLE, state_at(T0))
    main = copies.where(TABLE)
    copies.put(main, b"junk")
    with store.locked(TABLE), store.locked(TABLE, timeout=0):
        assert store.load(TABLE) == state_at(T0)
        assert pickle.loads(copies.get(main)) == state_at(T0)  # restored under our lock
        store.advance(TABLE, {"ALIC1": T0 + timedelta(hours=1)})
    assert copies.store().load(TABLE) == state_at(T0 + timedelta(hours=1))


def test_lock_excludes_another_store_instance_and_is_free_after(copies):
    """Two instances stand for two processes or machines; other tables are not blocked."""
    with hold_lock(copies.store()):
        other = copies.store()
        with (
            pytest.raises(StateLockedError, match=r"LEVEL1_SOILMET_30MIN\.lock"),
            other.locked(TABLE, timeout=0),
        ):
            pass
        with other.locked("LEVEL1_NMDB_1HOUR", timeout=0):
            pass
    with copies.store().locked(TABLE, timeout=0):
        pass


def test_backup_is_not_copied_over_main_while_another_export_holds_the_lock(copies):
    copies.store().save(TABLE, state_at(T0))
    main = copies.where(TABLE)
    copies.put(main, b"junk")
    with hold_lock(copies.store()):
        assert copies.store().load(TABLE) == state_at(T0)
        assert copies.get(main) == b"junk"  # left to the export that holds the lock
    assert copies.store().load(TABLE) == state_at(T0)
    assert pickle.loads(copies.get(main)) == state_at(T0)


# Local files only: crash-safe writes and the fcntl lock across processes.


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


def test_lock_excludes_another_thread_using_the_same_store(store):
    with hold_lock(store), pytest.raises(StateLockedError), store.locked(TABLE, timeout=0):
        pass
    with store.locked(TABLE, timeout=0):
        pass
