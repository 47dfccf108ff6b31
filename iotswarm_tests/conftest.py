"""Session-wide services: PostgreSQL, Mosquitto and an S3-compatible server, all real."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from iotswarm_tests.services import moto_server, require_tcp

# Fixture plugins: the export's database and folders, private Mosquitto brokers, Prometheus
# servers, the swarm's marked processes; any test may ask for their fixtures by name.
pytest_plugins = (
    "iotswarm_tests.export_fixtures",
    "iotswarm_tests.mosquitto_fixtures",
    "iotswarm_tests.prometheus_fixtures",
    "iotswarm_tests.swarm_runs",
)

# Plugins' asserts are rewritten by pytest; a helper module's must be asked for before any test
# module imports it (the export's exactly-once oracle), so its failures explain themselves.
pytest.register_assert_rewrite("iotswarm_tests.export_faults")

PG_ADMIN_URL = os.environ.get(
    "IOTSWARM_TEST_PG_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
MQTT_HOST = os.environ.get("IOTSWARM_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("IOTSWARM_TEST_MQTT_PORT", "1883"))


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Keep every test's embedded defaults (sample db, objects, state) in its own folder."""
    monkeypatch.setenv("IOTSWARM_DATA_DIR", str(tmp_path / "iotswarm-data"))
    # Tests make their own instances; a developer's DAGSTER_HOME must not leak into them.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture
def fresh_engines() -> Iterator[None]:
    """Every test's databases are new, so pooled connections must not outlive the test."""
    yield
    from iotswarm_pipelines.cosmos.source import dispose_engines

    dispose_engines()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url = sa.engine.make_url(PG_ADMIN_URL)
    require_tcp("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server_url) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"iotswarm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(pg_server_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The machine's Mosquitto (started by `make services`)."""
    require_tcp("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for the whole session; tests use their own buckets."""
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_test_credentials(monkeypatch) -> dict[str, str]:
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "eu-west-2",
    }
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    return credentials
