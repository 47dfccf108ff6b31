"""Raw access to a state store's copies, files or S3 objects, so one test covers both backends.

Each kind knows the layout on its own (folder, or bucket and prefix) instead of asking the
store, so the tests also check that the copies land where docs/export-storage.md says.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.state_backend import StateBackend
from iotswarm_pipelines.export.state_s3 import S3StateStore
from iotswarm_pipelines.export.state_store import StateStore

REGION = "eu-west-2"
STATE_PREFIX = "fdri/cosmos_swarm_state"
MAIN, BACKUP = ".pickle", ".pickle.backup"


@contextmanager
def hold_lock(
    store: StateBackend, table: catalogue.Table = catalogue.SOILMET_30MIN
) -> Iterator[None]:
    """Another export holding the table's lock: a thread with its own store instance.

    A lock is re-entrant in the thread holding it, so the holder must be another thread.
    """
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.locked(table):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        yield
    finally:
        release.set()
        holder.join(60)


def make_bucket(endpoint: str) -> str:
    """A fresh bucket on the test server (the caller sets test credentials)."""
    name = f"iotswarm-test-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


class LocalCopies:
    kind = "local"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def store(self) -> StateStore:
        """A new store instance: another process or machine would have its own."""
        return StateStore(state_dir=str(self.folder))

    def where(self, name: str, suffix: str = MAIN) -> Path:
        return self.folder / f"{name}{suffix}"

    def shown(self, where: Path) -> str:
        return str(where)

    def get(self, where: Path) -> bytes | None:
        return where.read_bytes() if where.exists() else None

    def put(self, where: Path, data: bytes) -> None:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(data)

    def delete(self, where: Path) -> None:
        where.unlink()

    def names(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir()) if self.folder.exists() else []


class S3Copies:
    kind = "s3"

    def __init__(self, endpoint: str, bucket: str, prefix: str = STATE_PREFIX) -> None:
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)

    def store(self, **options) -> S3StateStore:
        """A new store instance with its own client: another machine."""
        return S3StateStore(
            s3=S3Resource(endpoint_url=self.endpoint, region_name=REGION),
            bucket=self.bucket,
            prefix=self.prefix,
            **options,
        )

    def where(self, name: str, suffix: str = MAIN) -> str:
        return f"{self.prefix}/{name}{suffix}"

    def shown(self, where: str) -> str:
        return f"s3://{self.bucket}/{where}"

    def get(self, where: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=where)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchKey":
                return None
            raise

    def put(self, where: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=where, Body=data)

    def delete(self, where: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=where)

    def names(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"].rsplit("/", 1)[-1] for obj in listed.get("Contents", ()))
