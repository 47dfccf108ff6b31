"""Whole-file replacement that a crash can never leave half-written."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power loss, not only a process crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, temp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, ``os.replace``, fsync of the folder.

    The temporary lives in ``temp_dir`` (same file system) or else beside ``path``; its name
    starts with a dot and ends in ``.tmp``, so readers that look for exact names never see it.
    It stays flock-ed until renamed, so ``sweep_temporaries`` removes only those of writers that
    died (a lock dies with its process).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=temp_dir or path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sweep_temporaries(folder: Path) -> int:
    """Remove the temporaries in ``folder`` that no live writer holds; returns how many."""
    removed = 0
    for tmp in folder.glob(".*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a writer is still at work
        else:
            tmp.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(fd)
    return removed
