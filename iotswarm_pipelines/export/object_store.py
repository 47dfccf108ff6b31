"""Where payloads are stored: an S3 bucket, or a local folder with the same key layout.

Both stores upload with a bounded pool and keep at most twice that many objects in flight, so an
export of millions of rows never reads its payloads far ahead of the uploads. Every object gets a
PutResult; one failed object never stops the others, and the caller (the export) decides how far
a site's watermark may move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, runtime_checkable

import boto3
import botocore.handlers
import dagster as dg
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from iotswarm_pipelines.atomic import write_atomically

CONTENT_TYPE = "application/json"


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

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def list_from(self, folder: str, start_after: str) -> Iterator[ListedObject]: ...

    def get(self, key: str) -> bytes: ...

    def describe(self) -> str: ...


def put_concurrently(
    put: Callable[[str, bytes], None], objects: Iterable[tuple[str, bytes]], concurrency: int
) -> Iterator[PutResult]:
    """Run ``put`` over ``objects`` on a bounded pool, yielding results as they complete.

    Reads ``objects`` lazily, at most ``2 * concurrency`` ahead of the finished uploads, so memory
    stays bounded whatever the size of the export. If ``objects`` raises, the uploads already
    started finish and are reported before the error is re-raised, so the caller can still
    record them. Closing the iterator early cancels what has not started and waits for the rest.
    """

    def attempt(key: str, body: bytes) -> PutResult:
        try:
            put(key, body)
        except Exception as exc:  # reported per object; the others carry on
            return PutResult(key, len(body), describe_error(exc))
        return PutResult(key, len(body), None)

    window = 2 * max(1, concurrency)
    pending: set[Future[PutResult]] = set()
    source = iter(objects)
    failure: Exception | None = None
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="object-put") as pool:
        try:
            while True:
                try:
                    key, body = next(source)
                except StopIteration:
                    break
                except Exception as exc:  # the payload source failed: report what was stored
                    failure = exc
                    break
                pending.add(pool.submit(attempt, key, body))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        finally:
            for future in pending:
                future.cancel()
    if failure is not None:
        raise failure


def describe_error(exc: BaseException) -> str:
    """One clean line for a failed object: the S3 error code and message, never credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        attempts = meta.get("RetryAttempts", 0) + 1
        text = (
            f"{error.get('Code', 'Error')} (HTTP {meta.get('HTTPStatusCode', '?')}) after "
            f"{attempts} attempt(s): {error.get('Message', '')}"
        ).rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def s3_client(
    s3: S3Resource,
    *,
    max_pool_connections: int = 10,
    retry_mode: Literal["standard", "adaptive"] = "standard",
    max_attempts: int = 8,
) -> Any:
    """A boto3 S3 client from a dagster-aws ``S3Resource``'s settings, with our pool and retries.

    Built here rather than by ``S3Resource.get_client`` because that does not let us set the
    connection pool size or botocore's "standard"/"adaptive" retries (throttling such as
    SlowDown, 5xx and connection errors, with exponential backoff). Used by every S3 user
    (payload objects and the watermark state), so they connect the same way.
    """
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        # Path-style works for every S3-compatible server behind a custom endpoint.
        s3={"addressing_style": "path"} if s3.endpoint_url else None,
        signature_version=UNSIGNED if s3.use_unsigned_session else None,
    )
    session = boto3.session.Session(profile_name=s3.profile_name)
    client = session.client(
        "s3",
        region_name=s3.region_name,
        endpoint_url=s3.endpoint_url,
        use_ssl=s3.use_ssl,
        verify=s3.verify,
        aws_access_key_id=s3.aws_access_key_id,
        aws_secret_access_key=s3.aws_secret_access_key,
        aws_session_token=s3.aws_session_token,
        config=config,
    )
    # Objects are small: waiting for "100 Continue" before each body would add a whole round
    # trip per object, halving throughput on a distant link.
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    return client


class S3ObjectStore(dg.ConfigurableResource):
    """Payload objects in an S3 bucket (AWS, MinIO, LocalStack or a test server).

    Connection settings and credentials come from the nested dagster-aws ``S3Resource``; the
    client (``s3_client``) gets a connection pool as large as the upload pool.
    """

    s3: S3Resource
    bucket: str
    prefix: str = ""
    max_concurrency: int = 16
    max_attempts: int = 8
    retry_mode: Literal["standard", "adaptive"] = "standard"

    _client: Any = PrivateAttr(default=None)

    def client(self) -> Any:
        """One thread-safe boto3 client per resource instance, made on first use."""
        if self._client is None:
            self._client = s3_client(
                self.s3,
                max_pool_connections=max(10, self.max_concurrency),
                retry_mode=self.retry_mode,
                max_attempts=self.max_attempts,
            )
        return self._client

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        client = self.client()

        def put(key: str, body: bytes) -> None:
            client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)

        return put_concurrently(put, objects, self.max_concurrency)

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


class LocalObjectStore(dg.ConfigurableResource):
    """Payload objects as files under ``root``, one per key: the embedded default.

    Each file is written atomically (temporary file, fsync, rename, fsync of its folder), so a
    crash never leaves a torn object, and an object is on disk before its watermark moves.
    """

    root: str
    prefix: str = ""
    max_concurrency: int = 8

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"object key {key!r} must be a relative path without '.' or '..'")
        return Path(self.root).expanduser().joinpath(*parts)

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        def put(key: str, body: bytes) -> None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, body)

        return put_concurrently(put, objects, self.max_concurrency)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Full keys starting with ``prefix`` (the store's own prefix when empty), sorted."""
        wanted = prefix or (_join(self.prefix) + "/" if self.prefix.strip("/") else "")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            return []
        keys = (
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
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
