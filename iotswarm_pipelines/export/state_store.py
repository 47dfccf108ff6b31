"""The watermark state on disk: a main and a backup pickle per table, written crash-safely.

Files are ``<state_dir>/<TABLE>.pickle`` and ``<TABLE>.pickle.backup`` with TABLE in the database
spelling (``LEVEL1_SOILMET_30MIN``); the loading, recovery and save-order rules (including the
older tool's ``LEVEL_1_`` names) are ``state_backend.StateBackend``'s, shared with the S3 store.

Each file is written through a temporary file in the same folder (fsync, ``os.replace``, fsync of
the folder): a crash leaves every file either old or new, never torn. A crash between main and
backup leaves a new main and an old, still valid backup.

``locked(table)`` holds ``<TABLE>.lock`` (``filelock``: an fcntl lock) so that one process (or
thread) at a time runs an export of a table; it is re-entrant within the thread that holds it.
Loading takes no lock, but the rewrite of a missing or corrupt main file from the backup happens
only under it: done beside a running export it could put an older state over that export's newer
main file.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout
from pydantic import BaseModel

from iotswarm_pipelines.atomic import write_atomically
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.state_backend import (
    BACKUP_SUFFIX,
    CHECKSUM_SUFFIX,
    MAIN_SUFFIX,
    StateBackend,
)
from iotswarm_pipelines.export.store_errors import StateLockedError

# Lock files this process holds, and the thread holding each: flock does not nest, so a second
# flock of the same file by the holder would wait for itself.
_holders: dict[Path, int] = {}


class StateStoreSettings(BaseModel):
    """The folder of ``StateStore`` and its Dagster resource."""

    state_dir: str = platformdirs.user_state_dir("livecosmos")


class StateStore(StateStoreSettings, StateBackend):
    """Per-table watermark state files, compatible with the existing live-COSMOS uploader."""

    def _pair(self, name: str) -> tuple[Path, Path]:
        folder = Path(self.state_dir).expanduser()
        return folder / f"{name}{MAIN_SUFFIX}", folder / f"{name}{BACKUP_SUFFIX}"

    def paths(self, table: catalogue.Table) -> tuple[Path, Path]:
        return self._pair(table.name)

    def _read(self, where: Path) -> bytes | None:
        try:
            return where.read_bytes()
        except FileNotFoundError:
            return None

    def _sidecar(self, where: Path) -> Path:
        return where.with_name(where.name + CHECKSUM_SUFFIX)

    def _modified(self, where: Path) -> int | None:
        try:
            return where.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _write(self, where: Path, data: bytes) -> None:
        where.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(where, data)

    @contextmanager
    def locked(self, table: catalogue.Table, timeout: float | None = None) -> Iterator[None]:
        """Hold the table's inter-process lock (``<TABLE>.lock``).

        Waits for as long as another process or thread holds it; with ``timeout`` (seconds, 0 =
        do not wait) it raises StateLockedError instead.
        """
        main, _ = self.paths(table)
        lock_path = main.with_suffix(".lock").absolute()
        if _holders.get(lock_path) == threading.get_ident():
            yield  # this thread holds it already
            return
        main.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(
            lock_path,
            timeout=-1 if timeout is None else timeout,
            fallback_to_soft=False,  # an fcntl lock or an error, as the older uploader's
            on_acquired=_write_holder,
        )
        try:
            lock.acquire()
        except Timeout:
            holder = lock_path.read_text(errors="replace").strip() or "another export"
            raise StateLockedError(
                f"{lock_path} is held by {holder}; wait for it to finish", holder=holder
            ) from None
        _holders[lock_path] = threading.get_ident()
        try:
            yield
        finally:
            del _holders[lock_path]
            lock.release()


def _write_holder(fd: int) -> None:
    """Who holds the lock, for an export that has to wait: the lock file's only line."""
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}/{socket.gethostname()} since {since}".encode(), 0)
