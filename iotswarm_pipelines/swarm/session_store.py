"""Where swarm sessions and reports are kept: a folder, or S3 objects under a prefix.

A location is a folder path or ``s3://bucket/prefix``. Shards on hosts that share nothing but
the network save and resume through S3 (``IOTSWARM_SESSIONS_URI``); one machine keeps the
folder under ``IOTSWARM_DATA_DIR``. Each document is written whole (an atomic file replacement,
or one PUT), so a reader never sees half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from iotswarm_pipelines import settings
from iotswarm_pipelines.atomic import write_atomically
from iotswarm_pipelines.swarm.options import SwarmConfigError

SESSIONS_URI = "IOTSWARM_SESSIONS_URI"


class DocumentStore(Protocol):
    def names(self, prefix: str) -> list[str]: ...

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...

    def delete(self, name: str) -> None: ...

    def describe(self, name: str) -> str: ...


class FolderStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self, prefix: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.name.startswith(prefix))

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / name, data)

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def describe(self, name: str) -> str:
        return str(self.folder / name)


class S3Store:
    """Documents as objects ``<prefix>/<name>``, through the deployment's S3 connection."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix, client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self, prefix: str) -> list[str]:
        start = self._key("")
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        return sorted(o["Key"][len(start) :] for page in pages for o in page.get("Contents", []))

    def read(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"


def location(directory: str | os.PathLike | None = None) -> str:
    """The configured location, else ``$IOTSWARM_SESSIONS_URI``, else the data folder's."""
    chosen = directory or os.environ.get(SESSIONS_URI, "").strip()
    return str(chosen) if chosen else str(settings.data_dir() / "swarm_sessions")


def open_store(directory: str | os.PathLike | None = None) -> DocumentStore:
    """The store at ``location(directory)``; an S3 one connects as the deployment's S3 does."""
    where = location(directory)
    if not where.startswith("s3://"):
        return FolderStore(Path(where))
    from iotswarm_pipelines import s3  # boto3 only for a swarm that keeps its sessions in S3

    try:
        bucket, prefix = s3.split_s3_uri(where)
    except ValueError as exc:
        raise SwarmConfigError(f"sessions location {where!r} {exc}") from None
    return S3Store(bucket, prefix, s3.connect(s3.S3Connection.from_environment()))
