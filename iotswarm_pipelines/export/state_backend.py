"""What every watermark state store shares: the loading, recovery and save-order rules.

A store keeps two copies of each table's state, a main and a backup (``<TABLE>.pickle`` and
``<TABLE>.pickle.backup``), as files (``state_store.StateStore``) or as S3 objects
(``state_s3.S3StateStore``). The rules live here once, and each backend supplies only how to name,
read and write one copy and how to hold a table's lock:

* loading reads main; else the backup (which then rewrites main, under the lock only); else,
  when both are missing, the older tool's spelling (``LEVEL_1_SOILMET_30MIN``) of both; else an
  empty state when both are missing; anything else is ``StateRecoveryError``, never a silent reset;
* saving writes main, then the backup, so the copy read first is never older than the other;
* a backend that can (the files) writes a checksum sidecar after each copy
  (``<TABLE>.pickle.sha256``), which the older tool ignores: a copy that no longer matches it
  and is not newer than it was damaged where it lies (a flipped bit can still unpickle into a
  valid but different state) and counts as corrupt, so the backup is used. A copy newer than
  its sidecar was rewritten by another tool (the older uploader, a restore) and is trusted. Main
  and backup that both differ from their sidecars but hold the same state are a pair restored
  together with their old times (``cp -p`` of an older copy): damage in place would not hit both
  alike, so the older state loads, with a warning naming the watermarks it rolls back to;
* ``advance`` moves watermarks forward under the lock.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import state as rules
from iotswarm_pipelines.export.state import CorruptStateError, State, StateCopy
from iotswarm_pipelines.export.store_errors import (
    StateConflictError,
    StateLockedError,
    StatePartlySavedError,
    StateRecoveryError,
)
from iotswarm_pipelines.s3 import describe_error

MAIN_SUFFIX = ".pickle"
BACKUP_SUFFIX = ".pickle.backup"
CHECKSUM_SUFFIX = ".sha256"

log = logging.getLogger(__name__)


class _ChecksumMismatch(CorruptStateError):
    """A copy that reads as a state but is not the one its last save checksummed (and is not
    newer than that checksum): damaged in place, or restored from an older copy."""

    def __init__(self, message: str, state: State) -> None:
        super().__init__(message)
        self.state = state


_Content = State | CorruptStateError | None


def _parsed(data: bytes | None) -> _Content:
    """The state in one copy, None when the copy does not exist, or why it is corrupt."""
    if data is None:
        return None
    try:
        return rules.loads_state(data)
    except CorruptStateError as exc:
        return exc


class StateBackend:
    """Per-table main and backup watermark state, compatible with the existing uploader.

    A plain base class: each store mixes it into its settings model (``state_store``,
    ``state_s3``), and its Dagster resource builds the store (``store_resources``). Subclasses
    name a copy (``_pair``), read it (``_read``: bytes, or None when missing), write it
    whole (``_write``), hold the table's lock (``locked``) and show a copy (``_show``).
    Assets, sensors and the pipeline take any subclass.
    """

    def _pair(self, name: str) -> tuple[Any, Any]:
        """Where the main and backup copies of the table spelt ``name`` live."""
        raise NotImplementedError

    def _read(self, where: Any) -> bytes | None:
        raise NotImplementedError

    def _write(self, where: Any, data: bytes) -> None:
        raise NotImplementedError

    def _show(self, where: Any) -> str:
        return str(where)

    def _sidecar(self, where: Any) -> Any | None:
        """Where the checksum of a copy lives; None for a backend that keeps none."""
        return None

    def _modified(self, where: Any) -> int | None:
        """When a copy was last written (any monotonic unit), for the sidecar rule."""
        return None

    def _content(self, where: Any) -> _Content:
        """One copy's state, checked against its sidecar when it has one."""
        data = self._read(where)
        content = _parsed(data)
        side = self._sidecar(where)
        if data is None or not isinstance(content, dict) or side is None:
            return content
        recorded = self._read(side)
        if recorded is None or recorded.decode("ascii", "replace").strip() == _digest(data):
            return content  # no sidecar: written before checksums, or by the older tool
        written, checked = self._modified(where), self._modified(side)
        if written is not None and checked is not None and written > checked:
            log.warning(f"{self._show(where)} was rewritten by another tool; no checksum to check")
            return content
        return _ChecksumMismatch(
            f"does not match its checksum {self._show(side)}: damaged where it is stored", content
        )

    def _write_copy(self, where: Any, data: bytes) -> None:
        """A copy, then its sidecar: a crash between the two leaves the copy newer (trusted)."""
        self._write(where, data)
        self._write_sidecar(where, data)

    def _write_sidecar(self, where: Any, data: bytes) -> None:
        side = self._sidecar(where)
        if side is not None:
            self._write(side, f"{_digest(data)}\n".encode())

    def describe(self, table: str) -> str:
        """Where the table's main copy lives, for messages."""
        return self._show(self._pair(catalogue.get_table(table).name)[0])

    def locked(
        self, table: catalogue.TableRef, timeout: float | None = None
    ) -> AbstractContextManager[None]:
        """Hold the table's lock, re-entrant in the holding thread; waits, or with ``timeout``
        (seconds, 0 = do not wait) raises StateLockedError."""
        raise NotImplementedError

    def load(self, table: catalogue.TableRef) -> State:
        """Main; else the backup (which then rewrites main); else empty or a clear error.

        A main copy that exists but is corrupt with no backup beside it is an error too, not an
        empty state: starting over would silently skip everything older than ``fallback_hours``.
        """
        (main, first), (backup, second) = self._readable(table)
        if isinstance(first, dict):
            return first
        if (
            isinstance(first, _ChecksumMismatch)
            and isinstance(second, _ChecksumMismatch)
            and first.state == second.state
        ):
            log.warning(
                f"export state {self._show(main)} and {self._show(backup)} were restored together "
                "from an older copy (they agree with each other, not with the checksums of the "
                "last save): loading them rolls the watermarks back to "
                f"{rules.describe_watermarks(first.state)}; later rows are sent again, to the "
                "keys they had"
            )
            return first.state
        if isinstance(second, dict):
            log.warning(
                f"export state: using the backup {self._show(backup)} (watermarks "
                f"{rules.describe_watermarks(second)}) because the main copy {self._show(main)} "
                f"{_why_not(first)}; main is rewritten from the backup"
            )
            self._restore_main(catalogue.get_table(table).name, second)
            return second
        if first is None and second is None:
            return rules.empty_state()
        raise StateRecoveryError(
            _recovery_message(self._show(main), first, self._show(backup), second)
        )

    def copies(self, table: catalogue.TableRef) -> tuple[StateCopy, StateCopy]:
        """Main and backup as stored, nothing recovered or rewritten (the state health check)."""
        (main, first), (backup, second) = self._readable(table)
        return StateCopy(self._show(main), first), StateCopy(self._show(backup), second)

    def _readable(
        self, table: catalogue.TableRef
    ) -> tuple[tuple[Any, _Content], tuple[Any, _Content]]:
        """Main and backup with their contents: the current names, or the older tool's when
        only they exist."""
        spec = catalogue.get_table(table)
        main, backup = self._pair(spec.name)
        first, second = self._content(main), self._content(backup)
        if first is None and second is None:
            legacy_main, legacy_backup = self._pair(spec.legacy_name)
            old_first, old_second = (self._content(p) for p in (legacy_main, legacy_backup))
            if old_first is not None or old_second is not None:
                return (legacy_main, old_first), (legacy_backup, old_second)
        return (main, first), (backup, second)

    def _restore_main(self, table: str, state: State) -> None:
        """Rewrite main from the backup's state, unless another export holds the lock.

        That export saves both copies itself; writing here could put this older state over its
        newer main copy.
        """
        try:
            with self.locked(table, timeout=0):
                self._write_copy(self._pair(table)[0], rules.dumps_state(state))
        except (StateLockedError, StateConflictError) as exc:
            log.warning(f"{table}: main state copy left to the other export ({exc})")

    def save(self, table: catalogue.TableRef, state: State) -> None:
        """Write main, then the backup, each whole (the module docstring says why this order).

        A failure once main is written is ``StatePartlySavedError``, saying what is on disk.
        """
        data = rules.dumps_state(state)
        main, backup = self._pair(catalogue.get_table(table).name)
        self._write(main, data)  # until this is written, nothing is
        try:
            self._write_sidecar(main, data)
        except Exception as exc:
            raise StatePartlySavedError(
                f"the new watermarks are in the main state file {self._show(main)} only: its "
                f"checksum could not be written ({describe_error(exc)}), and the backup "
                f"{self._show(backup)} is left as it was"
            ) from exc
        try:
            self._write(backup, data)
        except Exception as exc:
            raise StatePartlySavedError(
                f"the new watermarks are in the main state file {self._show(main)} and its "
                f"checksum; the backup {self._show(backup)} could not be written "
                f"({describe_error(exc)}) and is left as it was"
            ) from exc
        try:
            self._write_sidecar(backup, data)
        except Exception as exc:
            raise StatePartlySavedError(
                f"the new watermarks are in both state files ({self._show(main)}, "
                f"{self._show(backup)}); only the backup's checksum "
                f"{self._show(self._sidecar(backup))} could not be written ({describe_error(exc)})"
            ) from exc

    def advance(self, table: catalogue.TableRef, updates: Mapping[str, datetime]) -> State:
        """Move watermarks forward under the table's lock and save; returns the new state."""
        with self.locked(table):
            new = rules.advance(self.load(table), updates)
            self.save(table, new)
            return new


def _why_not(content: CorruptStateError | None) -> str:
    """Why a main copy was passed over for the backup, in an operator's words."""
    if content is None:
        return "is missing"
    if isinstance(content, _ChecksumMismatch):
        return (
            "does not match the checksum of the last save and is older than it: damaged where "
            "it lies, or restored alone from an older copy (to roll back, restore both files)"
        )
    return f"is corrupt ({content})"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recovery_message(
    main: str,
    main_problem: Exception | None,
    backup: str,
    backup_problem: Exception | None,
) -> str:
    def why(problem: Exception | None) -> str:
        return "missing" if problem is None else f"corrupt: {problem}"

    return (
        f"cannot load the export state: {main} is {why(main_problem)}, and {backup} is "
        f"{why(backup_problem)}. To recover, restore either one from a backup copy; or delete "
        f"both to start again from scratch, which re-exports only the last fallback_hours of "
        f"every site (rows older than that are not sent)."
    )
