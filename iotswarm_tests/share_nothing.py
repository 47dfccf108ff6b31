"""A share-nothing deployment on this machine, for the test and the benchmark.

The same variables on every "host" (README, "Scaling out"): the instance and the COSMOS source
in PostgreSQL, step outputs, export objects and state, and swarm sessions and reports in S3,
Celery through Redis and MQTT to Mosquitto. The run worker (``dagster job execute``) gets a
folder of its own; the Celery workers get theirs in private mount namespaces
(``celery_workers(..., isolated_in=...)``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import boto3
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate

ROOT = Path(__file__).resolve().parents[1]
REGION = "eu-west-2"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing-secret"}
FOLDERS = ("home", "tmp", "work", "data", "dagster_home")


def prod_env(pg_url: str, s3_endpoint: str, bucket: str, mqtt: tuple[str, int]) -> dict[str, str]:
    """Every variable a host of this deployment needs: the same on the run worker and workers."""
    url = sa.engine.make_url(pg_url)
    return {
        "PATH": os.environ["PATH"],
        "CI": os.environ.get("CI", ""),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # a benchmark of another checkout
        "IOTSWARM_DEPLOYMENT": "prod",
        "IOTSWARM_EXECUTOR": "celery",
        "IOTSWARM_CELERY_BROKER": "redis://127.0.0.1:6379/0",
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database or "",
        "COSMOS_DB_URL": pg_url,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "LIVECOSMOS_S3_ENDPOINT_URL": s3_endpoint,
        "LIVECOSMOS_BUCKET": bucket,
        "LIVECOSMOS_STATE_URI": f"s3://{bucket}/state",
        "IOTSWARM_IO_URI": f"s3://{bucket}/steps",
        "IOTSWARM_SESSIONS_URI": f"s3://{bucket}/sessions",
        "IOTSWARM_MQTT_HOST": mqtt[0],
        "IOTSWARM_MQTT_PORT": str(mqtt[1]),
        "IOTSWARM_MQTT_TLS": "false",
    }


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


def make_bucket(endpoint: str) -> str:
    bucket = f"iotswarm-sharenothing-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database (the instance and the source), dropped afterwards."""
    name = f"iotswarm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sample_source(
    pg_url: str, start: datetime, end: datetime, sites: Sequence[str], tables: Sequence[str]
) -> None:
    """Sample rows in PostgreSQL, in the COSMOS schema production reads (``COSMOS_DB_URL``)."""
    generate(pg_url, start=start, end=end, sites=sites, tables=tables)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{catalogue.SCHEMA}"'))
        for table in tables:
            conn.execute(sa.text(f'ALTER TABLE "{table}" SET SCHEMA "{catalogue.SCHEMA}"'))
    engine.dispose()


def run_worker(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """The run worker's environment, with its own folders and the production instance file."""
    folders = {name: folder / name for name in FOLDERS}
    for path in folders.values():
        path.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.prod.yaml", folders["dagster_home"] / "dagster.yaml")
    return {
        **env,
        "HOME": str(folders["home"]),
        "TMPDIR": str(folders["tmp"]),
        "DAGSTER_HOME": str(folders["dagster_home"]),
        "IOTSWARM_DATA_DIR": str(folders["data"]),
    }


def reader_env(env: dict[str, str]) -> dict[str, str]:
    """What this process needs to read the instance and the sessions like any host."""
    return {k: v for k, v in env.items() if k.startswith(("DAGSTER_PG_", "AWS_", "LIVECOSMOS_S3_"))}
