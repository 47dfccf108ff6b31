"""Where payloads are stored: an S3 bucket, or a local folder with the same key layout.

Both stores upload with a bounded pool and keep at most twice that many objects in flight, so an
export of millions of rows never reads its payloads far ahead of the uploads. Every object gets a
PutResult; one failed object never stops the others, and the caller (the export) decides how far
a site's watermark may move.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, PrivateAttr

from iotswarm_pipelines.atomic import sweep_temporaries, write_atomically
from iotswarm_pipelines.daemon_pool import DaemonPool
from iotswarm_pipelines.export.store_errors import StoreUnavailableError
from iotswarm_pipelines.s3 import S3Connection, connect, describe_error

T = TypeVar("T")

CONTENT_TYPE = "application/json"
STOP_AFTER_FAILURES = 32
"""Failed writes in a row after which a local store is taken as unusable (a full disk)."""
PARTIAL_FOLDER = ".partial"
"""Where a local store writes its temporaries (a key never starts with a dot)."""


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    error: str | None  # one line, after retries are exhausted; None when stored


@dataclass(frozen=True)
class ListedObject:
    key: str
    md5: str | None  # of the body, when the listing says so (S3's ETag of a plain PUT)


@runtime_checkable
class ObjectStore(Protocol):
    prefix: str

    def check(self) -> None:
        """Raise ``StoreUnavailableError`` (one line naming the cause) unless usable."""
        ...

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def list_from(self, folder: str, start_after: str) -> Iterator[ListedObject]: ...

    def get(self, key: str) -> bytes: ...

    def describe(self) -> str: ...


def put_concurrently(
    put: Callable[[str, bytes], None],
    objects: Iterable[tuple[str, bytes]],
    concurrency: int,
    stop_after_failures: int | None = None,
) -> Iterator[PutResult]:
    """Run ``put`` over ``objects`` on a bounded pool, yielding results as they complete.

    Reads ``objects`` lazily, at most ``2 * concurrency`` ahead of the finished uploads, so memory
    stays bounded whatever the size of the export. If ``objects`` raises, the uploads already
    started finish and are reported before the error is re-raised, so the caller can still
    record them. Closing the iterator early cancels what has not started and waits for the rest.
    After ``stop_after_failures`` failures in a row the store is taken as down: nothing more is
    read or started, what had not started is reported as not attempted, and
    ``StoreUnavailableError`` ends the stream, so a dead store costs minutes, not hours.
    """

    def attempt(key: str, body: bytes) -> PutResult:
        try:
            put(key, body)
        except Exception as exc:  # reported per object; the others carry on
            return PutResult(key, len(body), describe_error(exc))
        return PutResult(key, len(body), None)

    window = 2 * max(1, concurrency)
    pending: dict[Future[PutResult], tuple[str, int]] = {}
    source = iter(objects)
    failure: Exception | None = None
    in_a_row = 0
    down: str | None = None
    pool = DaemonPool(max(1, concurrency), "object-put")

    def finished(done: set[Future[PutResult]]) -> Iterator[PutResult]:
        nonlocal in_a_row, down
        for future in done:
            key, size = pending.pop(future)
            if future.cancelled():
                yield PutResult(key, size, f"not attempted: {down}")
                continue
            result = future.result()
            in_a_row = in_a_row + 1 if result.error else 0
            if down is None and stop_after_failures and in_a_row >= stop_after_failures:
                down = f"{in_a_row} uploads failed in a row (last: {result.error}); stopped sending"
                for other in pending:
                    other.cancel()
            yield result

    try:
        while down is None:
            try:
                key, body = next(source)
            except StopIteration:
                break
            except Exception as exc:  # the payload source failed: report what was stored
                failure = exc
                break
            pending[pool.submit(attempt, key, body)] = (key, len(body))
            if len(pending) >= window:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield from finished(done)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            yield from finished(done)
    except BaseException:
        # Interrupted (Ctrl-C) or closed early: start nothing more, and do not wait for uploads
        # that may hang on a silent endpoint; their objects were never counted as stored.
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False)
        raise
    pool.shutdown(wait=True)
    if failure is not None:
        raise failure
    if down is not None:
        raise StoreUnavailableError(down)


_HINTS = {
    "NoSuchBucket": "create the bucket or fix bucket= in the configuration",
    "AccessDenied": "the credentials may not use this bucket; check them and the bucket policy",
    "InvalidAccessKeyId": "the access key is not known to the server; check the credentials",
    "SignatureDoesNotMatch": "the secret key does not match the access key; check it",
}

_HEAD_CODES = {403: "AccessDenied", 404: "NoSuchBucket", 301: "PermanentRedirect"}
"""A HEAD answer has no body, so its status stands for the S3 error code."""


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class S3ObjectStoreSettings(BaseModel):
    """The bucket and how to write to it, for ``S3ObjectStore`` and its Dagster resource."""

    s3: S3Connection
    bucket: str
    prefix: str = ""
    max_concurrency: int = 16
    max_attempts: int = 8
    retry_mode: Literal["standard", "adaptive"] = "standard"
    connect_timeout_seconds: float = Field(default=5, gt=0, description="Per connection attempt.")
    read_timeout_seconds: float = Field(
        default=30, gt=0, description="How long one request may wait for an answer."
    )
    stop_after_failures: int = Field(
        default=STOP_AFTER_FAILURES,
        ge=1,
        description="Failed uploads in a row (after their retries) that end the run: the store "
        "is down, so the rest is not attempted.",
    )


class S3ObjectStore(S3ObjectStoreSettings):
    """Payload objects in an S3 bucket (AWS, MinIO, LocalStack or a test server).

    Its client (``s3.connect``) gets a connection pool as large as the upload pool.
    """

    _client: Any = PrivateAttr(default=None)

    def client(self) -> Any:
        """One thread-safe boto3 client per store, made on first use."""
        if self._client is None:
            self._client = connect(
                self.s3,
                max_pool_connections=max(10, self.max_concurrency),
                retry_mode=self.retry_mode,
                max_attempts=self.max_attempts,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
            )
        return self._client

    def check(self) -> None:
        """One HEAD of the bucket, not retried: a missing bucket, refused credentials or an
        endpoint that cannot be reached fail here, by name. A server error (5xx, throttling) is
        left to the uploads, which retry it."""
        client = connect(
            self.s3,
            max_attempts=1,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
        )
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or status == 429:
                return
            code = exc.response.get("Error", {}).get("Code")
            if not code or code.isdigit():
                code = _HEAD_CODES.get(status, code or "Error")
            raise StoreUnavailableError(
                f"{self.describe()}: {code} (HTTP {status}) for bucket {self.bucket}; "
                + _HINTS.get(code, "check the bucket name, endpoint and credentials")
            ) from None
        except Exception as exc:  # connection refused, timeouts, bad endpoint
            raise StoreUnavailableError(f"{self.describe()}: {describe_error(exc)}") from None
        finally:
            client.close()

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        client = self.client()

        def put(key: str, body: bytes) -> None:
            client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)

        return put_concurrently(put, objects, self.max_concurrency, self.stop_after_failures)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Full keys starting with ``prefix`` (the store's own prefix when empty), sorted."""
        wanted = prefix or (_join(self.prefix) + "/" if self.prefix.strip("/") else "")
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=wanted)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))

    def list_from(self, folder: str, start_after: str) -> Iterator[ListedObject]:
        """Keys under ``folder`` sorting after ``start_after``, in key order, a page at a time.

        Lazy, so a caller that has seen the end of its time range stops paging there.
        """
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=folder, StartAfter=start_after)
        )
        for page in pages:
            for obj in page.get("Contents", ()):
                etag = obj.get("ETag", "").strip('"')
                # A multipart or SSE-KMS ETag is not the body's MD5 ("-" or not 32 hex digits).
                yield ListedObject(obj["Key"], etag if len(etag) == 32 else None)

    def get(self, key: str) -> bytes:
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(f"no object {key!r} in {self.describe()}") from None
            raise
        return response["Body"].read()

    def describe(self) -> str:
        return f"s3://{_join(self.bucket, self.prefix)}"


class LocalObjectStoreSettings(BaseModel):
    """The folder of ``LocalObjectStore`` and its Dagster resource."""

    root: str
    prefix: str = ""
    max_concurrency: int = 8


class LocalObjectStore(LocalObjectStoreSettings):
    """Payload objects as files under ``root``, one per key: the embedded default.

    Each file is written atomically (temporary file, fsync, rename, fsync of its folder), so a
    crash never leaves a torn object, and an object is on disk before its watermark moves. The
    temporaries live in ``<root>/.partial/``, outside every key's folder, so a reader or a sync
    of the object tree never meets one; those of killed runs are swept at the next start.
    """

    root: str
    prefix: str = ""
    max_concurrency: int = 8

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"object key {key!r} must be a relative path without '.' or '..'")
        return Path(self.root).expanduser().joinpath(*parts)

    def check(self) -> None:
        """The root folder exists (or can be made) and takes a file: not a file, not read-only."""
        try:
            self._partial.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self._partial):  # a private name: runs may overlap
                pass
        except OSError as exc:
            raise StoreUnavailableError(f"{self.describe()}: {describe_error(exc)}") from None

    @property
    def _partial(self) -> Path:
        return Path(self.root).expanduser() / PARTIAL_FOLDER

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        partial = self._partial
        partial.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(partial)

        def put(key: str, body: bytes) -> None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, body, temp_dir=partial)

        return put_concurrently(put, objects, self.max_concurrency, STOP_AFTER_FAILURES)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Full keys starting with ``prefix`` (the store's own prefix when empty), sorted."""
        wanted = prefix or (_join(self.prefix) + "/" if self.prefix.strip("/") else "")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            return []
        keys = (
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        return sorted(k for k in keys if k.startswith(wanted))

    def list_from(self, folder: str, start_after: str) -> Iterator[ListedObject]:
        """Files of the key folder ``folder`` whose keys sort after ``start_after``, in order."""
        directory = self._path(folder.rstrip("/"))
        if not directory.is_dir():
            return
        names = sorted(
            p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
        )
        for name in names:
            if folder + name > start_after:
                yield ListedObject(folder + name, None)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no object {key!r} in {self.describe()}") from None

    def describe(self) -> str:
        uri = Path(self.root).expanduser().resolve().as_uri()
        return f"{uri}/{self.prefix.strip('/')}" if self.prefix.strip("/") else uri
