"""The watermark state on disk: a main and a backup pickle per table, written crash-safely.

Files are ``<state_dir>/<TABLE>.pickle`` and ``<TABLE>.pickle.backup`` with TABLE in the database
spelling (``LEVEL1_SOILMET_30MIN``). When neither exists but the older tool's spelling does
(``LEVEL_1_SOILMET_30MIN.pickle``), those are read instead, and every later save writes the new
names, so a switch from the old uploader needs no renaming.

Each save writes the main file, then the backup, each through a temporary file in the same folder
(fsync, ``os.replace``, fsync of the folder): a crash leaves every file either old or new, never
torn. Main goes first so that the file read first is never older than the backup; a crash between
the two leaves a new main and an old, still valid backup.

``locked(table)`` holds ``<TABLE>.lock`` (fcntl) so that one process (or thread) at a time runs
an export of a table; it is re-entrant within the thread that holds it. Loading takes no lock,
but the rewrite of a missing or corrupt main file from the backup happens only under it: done
beside a running export it could put an older state over that export's newer main file.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import dagster as dg
import platformdirs

from iotswarm_pipelines.atomic import write_atomically
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import state as rules
from iotswarm_pipelines.export.state import CorruptStateError, State, StateCopy

MAIN_SUFFIX = ".pickle"
BACKUP_SUFFIX = ".pickle.backup"

log = logging.getLogger(__name__)

# Lock files this process holds, and the thread holding each: flock does not nest, so a second
# flock of the same file by the holder would wait for itself.
_holders: dict[Path, int] = {}


class StateRecoveryError(RuntimeError):
    """Neither state file can be trusted; a person has to decide how to continue."""


class StateLockedError(RuntimeError):
    """Another process holds the table's state lock (only raised when a timeout is given)."""


def _read(path: Path) -> State | CorruptStateError | None:
    """The state in one file, None when the file does not exist, or why it is corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return rules.loads_state(data)
    except CorruptStateError as exc:
        return exc


class StateStore(dg.ConfigurableResource):
    """Per-table watermark state files, compatible with the existing live-COSMOS uploader."""

    state_dir: str = platformdirs.user_state_dir("livecosmos")

    def _folder(self) -> Path:
        return Path(self.state_dir).expanduser()

    def paths(self, table: str) -> tuple[Path, Path]:
        name = catalogue.get_table(table).name
        folder = self._folder()
        return folder / f"{name}{MAIN_SUFFIX}", folder / f"{name}{BACKUP_SUFFIX}"

    def _legacy_paths(self, table: str) -> tuple[Path, Path]:
        name = catalogue.get_table(table).legacy_name
        folder = self._folder()
        return folder / f"{name}{MAIN_SUFFIX}", folder / f"{name}{BACKUP_SUFFIX}"

    def _readable_paths(self, table: str) -> tuple[Path, Path]:
        """The files a load reads: the current names, or the older tool's when only they exist."""
        main, backup = self.paths(table)
        if not main.exists() and not backup.exists():
            legacy_main, legacy_backup = self._legacy_paths(table)
            if legacy_main.exists() or legacy_backup.exists():
                return legacy_main, legacy_backup
        return main, backup

    def copies(self, table: str) -> tuple[StateCopy, StateCopy]:
        """Main and backup as they are on disk, nothing recovered or rewritten (health check)."""
        main, backup = self._readable_paths(table)
        return StateCopy(str(main), _read(main)), StateCopy(str(backup), _read(backup))

    def load(self, table: str) -> State:
        """Main file; else the backup (which then rewrites main); else empty or a clear error.

        A main file that exists but is corrupt with no backup beside it is an error too, not an
        empty state: starting over would silently skip everything older than ``fallback_hours``.
        """
        main, backup = self._readable_paths(table)
        first = _read(main)
        if isinstance(first, dict):
            return first
        second = _read(backup)
        if isinstance(second, dict):
            why = "missing" if first is None else f"corrupt ({first})"
            log.warning(f"export state {main} is {why}; using the backup {backup}")
            self._restore_main(table, second)
            return second
        if first is None and second is None:
            return rules.empty_state()
        raise StateRecoveryError(_recovery_message(main, first, backup, second))

    def _restore_main(self, table: str, state: State) -> None:
        """Rewrite the main file from the backup's state, unless another export holds the lock.

        That export saves both files itself; writing here could put this older state over its
        newer main file.
        """
        try:
            with self.locked(table, timeout=0):
                write_atomically(self.paths(table)[0], rules.dumps_state(state))
        except StateLockedError:
            log.warning(f"{table}: main state file left to the export that holds the lock")

    def save(self, table: str, state: State) -> None:
        """Write main, then backup, each atomically (see the module docstring for the order)."""
        data = rules.dumps_state(state)
        main, backup = self.paths(table)
        main.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(main, data)
        write_atomically(backup, data)

    @contextmanager
    def locked(self, table: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the table's inter-process lock (``<TABLE>.lock``, fcntl).

        Waits for as long as another process or thread holds it; with ``timeout`` (seconds, 0 =
        do not wait) it raises StateLockedError instead.
        """
        main, _ = self.paths(table)
        lock_path = main.with_suffix(".lock").absolute()
        if _holders.get(lock_path) == threading.get_ident():
            yield  # this thread holds it already
            return
        main.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as handle:
            _acquire(handle.fileno(), lock_path, timeout)
            _holders[lock_path] = threading.get_ident()
            try:
                yield
            finally:
                del _holders[lock_path]
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def advance(self, table: str, updates: Mapping[str, datetime]) -> State:
        """Move watermarks forward under the table's lock and save; returns the new state."""
        with self.locked(table):
            new = rules.advance(self.load(table), updates)
            self.save(table, new)
            return new


def _acquire(fd: int, lock_path: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StateLockedError(
                    f"{lock_path} is held by another export of this table; wait for it to finish"
                ) from None
            time.sleep(0.05)


def _recovery_message(
    main: Path, main_problem: Exception | None, backup: Path, backup_problem: Exception | None
) -> str:
    def why(problem: Exception | None) -> str:
        return "missing" if problem is None else f"corrupt: {problem}"

    return (
        f"cannot load the export state: {main} is {why(main_problem)}, and {backup} is "
        f"{why(backup_problem)}. To recover, restore either file from a backup copy; or delete "
        f"both to start again from scratch, which re-exports only the last fallback_hours of "
        f"every site (rows older than that are not sent)."
    )
