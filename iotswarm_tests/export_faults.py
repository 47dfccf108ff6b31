"""What the export's fault tests share: seeding a table, running one export, and the
exactly-once oracle (the objects the source rows imply, each row stored once, no watermark
ahead of what is stored), with stores and state stores that fail on cue.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import boto3
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import ObjectStore, PutResult, S3ObjectStore
from iotswarm_pipelines.export.pipeline import build_objects, export_table
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.watermarks import aligned_batches, newest_time
from iotswarm_tests.delegating_store import DelegatingStore
from iotswarm_tests.export_fixtures import PREFIX, SOILMET, insert_rows, make_rows

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 6, 1)
REGION = "eu-west-2"


def half_hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=30 * i) for i in range(count)]


def seed(url: str, sites: dict[str, list[datetime]], table: str = SOILMET) -> None:
    for site, times in sites.items():
        insert_rows(url, table, make_rows(table, site, times))


def export(url: str, store: ObjectStore, state: StateStore, **kwargs):
    kwargs.setdefault("source", CosmosSource(url=url, retry_backoff_seconds=0.01))
    kwargs.setdefault("fallback_hours", None)
    return export_table(catalogue.SOILMET_30MIN, store=store, state=state, **kwargs)


def expected_objects(url: str, batch_size: int = 1) -> dict[str, list[dict]]:
    """Key -> rows of every payload the source's rows imply (``aligned_batches``)."""
    source = CosmosSource(url=url)
    spec = catalogue.get_table(SOILMET)
    newest = source.newest_times(catalogue.SOILMET_30MIN)
    rows = (
        row
        for site in sorted(newest)
        for row in source.rows_after(catalogue.SOILMET_30MIN, site, None)
    )
    batches = aligned_batches(rows, batch_size, spec.cadence, newest)
    return {key: batch for key, _, batch in build_objects(spec, PREFIX, batches)}


def stored_rows(store: ObjectStore) -> Counter:
    """How many stored objects hold each (site, time): every count must be 1."""
    found: Counter = Counter()
    for key in store.list_keys():
        payload = json.loads(store.get(key))
        site = payload["head"]["environment"]["station_name"]
        found.update((site, datetime.fromisoformat(row["time"])) for row in payload["data"])
    return found


def assert_exactly_the_expected_objects(url: str, store: ObjectStore, batch_size: int = 1) -> None:
    expected = expected_objects(url, batch_size)
    keys = store.list_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) == set(expected)
    rows = stored_rows(store)
    assert all(count == 1 for count in rows.values())
    assert set(rows) == {(r["SITE_ID"], r["DATE_TIME"]) for b in expected.values() for r in b}


def assert_watermarks_not_ahead(
    url: str, store: ObjectStore, state: StateStore, batch_size: int = 1
) -> None:
    """Every payload at or before a site's watermark is stored."""
    stored = set(store.list_keys())
    current = state.load(catalogue.SOILMET_30MIN)
    for key, batch in expected_objects(url, batch_size).items():
        mark = watermark(current, batch[0]["SITE_ID"])
        if mark is not None and newest_time(batch) <= mark:
            assert key in stored, f"watermark {mark} is ahead of the unstored {key}"


def new_bucket(endpoint: str) -> S3ObjectStore:
    bucket = f"iotswarm-rel-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return s3_on(endpoint, bucket)


def s3_on(endpoint: str, bucket: str, **options) -> S3ObjectStore:
    return S3ObjectStore(
        s3=S3Resource(endpoint_url=endpoint, region_name=REGION),
        bucket=bucket,
        prefix=PREFIX,
        **options,
    )


class HookedStore(DelegatingStore):
    """Runs ``hook(n)`` in the export's thread after it hands over its nth object."""

    def __init__(self, inner: ObjectStore, hook) -> None:
        super().__init__(inner)
        self.hook = hook

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        def counted() -> Iterator[tuple[str, bytes]]:
            for n, item in enumerate(objects, start=1):
                yield item
                self.hook(n)

        return self.inner.put_many(counted())


class Crash(BaseException):
    """A process dying: not an Exception, so nothing on the way catches it."""


class CrashingState:
    """A state store whose saves die once the run has crashed, like a killed process."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.crashed = False

    def load(self, table):
        return self.inner.load(table)

    def save(self, table, state) -> None:
        if self.crashed:
            raise Crash("died before the state was written")
        self.inner.save(table, state)

    def locked(self, table, timeout=None):
        return self.inner.locked(table, timeout)
