"""The watermark state as S3 objects beside the payloads, safe with writers on several machines.

Objects are ``<prefix>/<TABLE>.pickle`` and ``<TABLE>.pickle.backup`` (the same bytes as the
local files, so either can be copied to the other), and ``<prefix>/<TABLE>.lock`` while an export
holds the table. The loading, recovery and save-order rules are ``StateBackend``'s.

Two safeguards, because two machines share nothing but the bucket:

* **Conditional writes.** The store remembers the ETag of each copy as it loaded it (or that it
  was missing) and writes with ``If-Match: <that ETag>`` (``If-None-Match: *`` when it was
  missing). If another writer moved the state in between, S3 answers 412 (or 409 for a
  concurrent conditional write) and the save raises ``StateConflictError``: nothing is
  overwritten, so one writer can never erase another's progress, even without the lock.
* **A lease per table** (``locked``), so that two exports of one table do not both do the work
  only for one to fail at its save: ``<TABLE>.lock`` is created with ``If-None-Match: *``, and
  renewed by a heartbeat thread (``If-Match`` its own ETag) every third of ``lease_seconds``. A
  holder that crashed stops renewing; once the lease is older than its ``lease_seconds``, by the
  *server's* clock (the GET's ``Date`` minus the object's ``Last-Modified``, so machines' clocks
  need not agree), another export takes it over with ``If-Match`` on the stale lease's ETag, so
  of two takers only one wins. Release deletes it with ``If-Match``, so a holder whose lease was
  taken over never deletes the new holder's. The lease only saves work; correctness rests on
  the conditional writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, PrivateAttr

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.state_backend import BACKUP_SUFFIX, MAIN_SUFFIX, StateBackend
from iotswarm_pipelines.export.store_errors import StateConflictError, StateLockedError
from iotswarm_pipelines.s3 import S3Connection, connect, describe_error

LOCK_SUFFIX = ".lock"
LEASE_POLL_SECONDS = 1.0
# What S3 answers when a condition fails: 412 for a stale ETag or an object that now exists, 409
# when another conditional write to the key is in flight, 404 when an If-Match target is gone.
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"}

log = logging.getLogger(__name__)

# Leases this process holds (bucket, key) and the thread holding each, for re-entrancy.
_holders: dict[tuple[str, str], int] = {}


def _conflict(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _CONFLICT_CODES


def _etag_of(data: bytes) -> str:
    """The ETag S3 gives a single-part upload of ``data`` (its MD5), quoted."""
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


@dataclass(frozen=True)
class _Lease:
    """A lease object as read: who holds it, its ETag, and how old it is by the server's clock."""

    etag: str
    owner: str
    lease_seconds: float
    age_seconds: float

    @property
    def stale(self) -> bool:
        return self.age_seconds >= self.lease_seconds


class S3StateStoreSettings(BaseModel):
    """The bucket and prefix of ``S3StateStore`` and its Dagster resource."""

    s3: S3Connection
    bucket: str
    prefix: str = ""
    lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A lease not renewed for this long (a crashed holder) may be taken over.",
    )


class S3StateStore(S3StateStoreSettings, StateBackend):
    """Per-table watermark state as S3 objects, with conditional writes and a per-table lease.

    It connects as ``S3ObjectStore`` does; usually the same bucket as the payloads, under its
    own prefix.
    """

    _client: Any = PrivateAttr(default=None)
    # ETag of each key as this store last read or wrote it; None = it did not exist.
    _etags: dict[str, str | None] = PrivateAttr(default_factory=dict)

    def client(self) -> Any:
        """One boto3 client per store instance, made on first use."""
        if self._client is None:
            self._client = connect(self.s3)
        return self._client

    def _key(self, name: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), name) if p)

    def _pair(self, name: str) -> tuple[str, str]:
        return self._key(f"{name}{MAIN_SUFFIX}"), self._key(f"{name}{BACKUP_SUFFIX}")

    def _show(self, where: str) -> str:
        return f"s3://{self.bucket}/{where}"

    def _get(self, key: str) -> dict[str, Any] | None:
        """The GET response (body read into ``data``), or None when there is no such object."""
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise RuntimeError(f"cannot read {self._show(key)}: {describe_error(exc)}") from None
        return {**response, "data": response["Body"].read()}

    def _put_if(self, key: str, body: bytes, condition: dict[str, str]) -> str | None:
        """Put ``body`` if ``condition`` (IfMatch / IfNoneMatch) holds: the new ETag, else None."""
        try:
            response = self.client().put_object(Bucket=self.bucket, Key=key, Body=body, **condition)
        except ClientError as exc:
            if _conflict(exc):
                return None
            raise RuntimeError(f"cannot write {self._show(key)}: {describe_error(exc)}") from None
        return response["ETag"]

    def _read(self, where: str) -> bytes | None:
        response = self._get(where)
        self._etags[where] = None if response is None else response["ETag"]
        return None if response is None else response["data"]

    def _write(self, where: str, data: bytes) -> None:
        """Write ``where`` only if it still holds what this store last saw there."""
        known = self._etags.get(where)
        etag = self._put_if(where, data, {"IfMatch": known} if known else {"IfNoneMatch": "*"})
        if etag is None:
            if self._holds(where, data):
                return  # a retry after a lost answer found the first attempt's write
            raise StateConflictError(
                f"{self._show(where)} was changed by another writer since this export read it "
                "(its ETag no longer matches); nothing was overwritten. Another export of this "
                "table ran elsewhere: let it finish, then run again (it starts from the newer "
                "state)"
            )
        self._etags[where] = etag

    def _holds(self, where: str, data: bytes) -> bool:
        """Whether ``where`` now holds exactly ``data`` (then remember its ETag)."""
        try:
            etag = self.client().head_object(Bucket=self.bucket, Key=where)["ETag"]
        except ClientError:
            return False
        if etag != _etag_of(data):
            return False
        self._etags[where] = etag
        return True

    @contextmanager
    def locked(self, table: catalogue.TableRef, timeout: float | None = None) -> Iterator[None]:
        """Hold the table's lease ``<prefix>/<TABLE>.lock`` (see the module docstring).

        Waits while another live export holds it; with ``timeout`` (seconds, 0 = do not wait) it
        raises StateLockedError instead. Re-entrant in the thread that holds it.
        """
        key = self._key(f"{catalogue.get_table(table).name}{LOCK_SUFFIX}")
        holder = (self.bucket, key)
        if _holders.get(holder) == threading.get_ident():
            yield
            return
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        etag = self._take_lease(key, owner, timeout)
        _holders[holder] = threading.get_ident()
        stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._renew_lease,
            args=(key, owner, etag, stop),
            name=f"state-lease-{table}",
            daemon=True,
        )
        heartbeat.start()
        try:
            yield
        finally:
            stop.set()
            heartbeat.join()
            del _holders[holder]

    def _lease_body(self, owner: str, renewal: int) -> bytes:
        # The renewal count changes the ETag at each renewal, so a taker's If-Match on the
        # ETag it judged stale fails if the holder renewed in between.
        body = {"owner": owner, "lease_seconds": self.lease_seconds, "renewal": renewal}
        return json.dumps(body).encode()

    def _take_lease(self, key: str, owner: str, timeout: float | None) -> str:
        body = self._lease_body(owner, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self._read_lease(key)
            if current is None or current.stale:
                condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current.etag}
                etag = self._put_if(key, body, condition)
                if etag is None:
                    continue  # another export moved first: look again
                if current is not None:
                    log.warning(
                        f"took over {self._show(key)} from {current.owner}, not renewed for "
                        f"{current.age_seconds:.0f} s"
                    )
                return etag
            if deadline is not None and time.monotonic() >= deadline:
                raise StateLockedError(
                    f"{self._show(key)} is held by another export of this table "
                    f"({current.owner}, renewed {current.age_seconds:.0f} s ago); wait for it "
                    f"to finish, or {current.lease_seconds:.0f} s after it stopped renewing",
                    holder=f"{current.owner} (renewed {current.age_seconds:.0f} s ago)",
                )
            pause = LEASE_POLL_SECONDS
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def _read_lease(self, key: str) -> _Lease | None:
        response = self._get(key)
        if response is None:
            return None
        try:
            body = json.loads(response["data"])
            owner, seconds = str(body["owner"]), float(body["lease_seconds"])
        except (ValueError, TypeError, KeyError):  # unreadable: trust our own lease length
            owner, seconds = "an unknown holder", self.lease_seconds
        server_now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - response["LastModified"]).total_seconds()
        return _Lease(response["ETag"], owner, seconds, age)

    def _renew_lease(self, key: str, owner: str, etag: str, stop: threading.Event) -> None:
        """Heartbeat: renew every third of the lease; at the end, delete it if still ours."""
        renewal = 0
        while not stop.wait(self.lease_seconds / 3):
            renewal += 1
            try:
                renewed = self._put_if(key, self._lease_body(owner, renewal), {"IfMatch": etag})
            except RuntimeError as exc:  # unreachable for now: try again at the next beat
                log.warning(f"could not renew the lease: {exc}")
                continue
            if renewed is None:
                # Taken over: the conditional state writes still refuse to overwrite the other
                # export's progress, so this one fails at its next save.
                log.warning(f"lost the lease {self._show(key)} to another export")
                return
            etag = renewed
        try:
            self.client().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if not _conflict(exc):
                log.warning(f"could not release {self._show(key)}: {describe_error(exc)}")
