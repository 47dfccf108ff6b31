"""COSMOS rows written straight into a real database, and the export's files, for the tests.

A pytest plugin (registered in conftest.py): ``cosmos_url``, ``local_objects`` and
``local_state`` are one test's database, object folder and state folder, all under its
``tmp_path``; the plain builders make the same for another folder (a second store, a
Hypothesis example's own folder).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import LocalObjectStore, S3ObjectStore
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.state_store import StateStore

SOILMET = "LEVEL1_SOILMET_30MIN"
PRECIP = "LEVEL1_PRECIP_1MIN"
PREFIX = "fdri/cosmos_swarm"


def make_rows(table: str, site_id: str, times: Sequence[datetime]) -> list[dict]:
    """Rows with every column: integers count up, floats vary, strings are short words."""
    spec = catalogue.get_table(table)
    rows = []
    for i, when in enumerate(times):
        row: dict = {}
        for column in spec.columns:
            if column.name == catalogue.SITE_ID:
                row[column.name] = site_id
            elif column.name == catalogue.DATE_TIME:
                row[column.name] = when
            elif column.type is catalogue.ColumnType.INTEGER:
                row[column.name] = i + 1
            elif column.type is catalogue.ColumnType.STRING:
                row[column.name] = "JUNG"
            elif len(row) % 7 == 0:
                row[column.name] = None
            else:
                row[column.name] = round(i * 0.25 + len(row), 3)
        rows.append(row)
    return rows


def insert_rows(url: str, table: str, rows: Sequence[dict]) -> None:
    engine = sa.create_engine(url)
    try:
        schema.metadata.create_all(engine, tables=[schema.sa_table(table)])
        if rows:
            with engine.begin() as conn:
                conn.execute(schema.sa_table(table).insert(), list(rows))
    finally:
        engine.dispose()


def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cosmos.sqlite'}"


def local_store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path / "objects"), prefix=PREFIX)


def state_store(tmp_path) -> StateStore:
    return StateStore(state_dir=str(tmp_path / "state"))


@pytest.fixture
def cosmos_url(tmp_path) -> str:
    """This test's COSMOS database: an SQLite file its first insert creates."""
    return sqlite_url(tmp_path)


@pytest.fixture
def local_objects(tmp_path) -> LocalObjectStore:
    """This test's object folder (``objects/``), the local store the export writes to."""
    return local_store(tmp_path)


@pytest.fixture
def local_state(tmp_path) -> StateStore:
    """This test's state folder (``state/``), where the export keeps its watermarks."""
    return state_store(tmp_path)


def source(url: str) -> CosmosSource:
    return CosmosSource(url=url)


def recent_rows(
    tmp_path, sites: Sequence[str] = ("ALIC1",), age: timedelta = timedelta(minutes=40)
) -> tuple[str, datetime, dict]:
    """Two SOILMET rows per site, the older ``age`` ago, in a fresh SQLite file, with local
    state and objects: (url, time of the older rows, resources of the export)."""
    url = sqlite_url(tmp_path)
    recent = utc_now().replace(second=0, microsecond=0) - age
    for site in sites:
        insert_rows(
            url, SOILMET, make_rows(SOILMET, site, [recent, recent + timedelta(minutes=30)])
        )
    resources = {
        "cosmos": source(url),
        "state": state_store(tmp_path),
        "object_store": local_store(tmp_path),
    }
    return url, recent, resources


def s3_store(endpoint: str) -> S3ObjectStore:
    """A store on a fresh bucket of the loopback S3 server (needs aws_test_credentials)."""
    import boto3
    from dagster_aws.s3 import S3Resource

    bucket = f"iotswarm-export-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    return S3ObjectStore(
        s3=S3Resource(endpoint_url=endpoint, region_name="eu-west-2"), bucket=bucket, prefix=PREFIX
    )
