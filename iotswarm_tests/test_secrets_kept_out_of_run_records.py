"""Secrets never reach what Dagster records of a run.

The MQTT password, a database URL's password and the AWS secret key, planted as unique
values, are searched for in every event, the run, its config, tags and job snapshot (and in a
command's whole ``DAGSTER_HOME``), for good runs and failed ones; every run is made on
``dg.instance_for_test()`` or a home of the test's own.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.cosmos.resource import CosmosSourceResource
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.store_resources import S3ObjectStoreResource
from iotswarm_pipelines.secret_files import SWARM_PASSWORD_ENV as PASSWORD_ENV
from iotswarm_pipelines.secret_files import SWARM_SOURCE_URL_ENV
from iotswarm_pipelines.swarm.launch import cli_swarm_job
from iotswarm_tests.export_fixtures import PREFIX, SOILMET, insert_rows, make_rows, state_store
from iotswarm_tests.services import free_port
from iotswarm_tests.swarm_runs import swarm_config, swarm_run_config

BROKER_PASSWORD = "s3cret-pass"  # the password_broker fixture's user `swarm`


def run_records(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Everything Dagster keeps of a run: events (messages, metadata, errors) and the run."""
    run = instance.get_run_by_id(run_id)
    records = [dg.serialize_value(r) for r in instance.all_logs(run_id)]
    records += [str(r.user_message) for r in instance.all_logs(run_id)]
    records += [dg.serialize_value(run), repr(run.tags), repr(run.run_config)]
    snapshot = instance.get_job_snapshot(run.job_snapshot_id) if run.job_snapshot_id else None
    if snapshot is not None:
        records.append(dg.serialize_value(snapshot))
    return records


def assert_secret_absent(instance: dg.DagsterInstance, run_id: str, secret: str) -> None:
    records = run_records(instance, run_id)
    assert len(records) > 5  # the run was recorded at all
    leaks = [r[:300] for r in records if secret in r]
    assert leaks == [], leaks


def test_mqtt_password_never_reaches_the_swarm_runs_records(
    password_broker, tmp_path, monkeypatch, capfd
):
    name = f"iotswarm-rel-secret-{uuid.uuid4().hex[:8]}"
    plan = swarm_config(name, tmp_path, per_site=3, max_cycles=2, sleep_time=0, verify=True)
    mqtt = {
        "port": password_broker.port,
        "username": "swarm",
        "password": {"env": PASSWORD_ENV},
    }
    wrong = f"planted-wrong-{uuid.uuid4().hex}"
    with dg.instance_for_test() as instance:
        monkeypatch.setenv(PASSWORD_ENV, BROKER_PASSWORD)
        good = cli_swarm_job.execute_in_process(
            run_config=swarm_run_config(plan, mqtt), instance=instance, raise_on_error=False
        )
        assert good.success
        assert good.output_for_node("swarm_report").delivered == 6
        assert_secret_absent(instance, good.run_id, BROKER_PASSWORD)

        monkeypatch.setenv(PASSWORD_ENV, wrong)
        bad = cli_swarm_job.execute_in_process(
            run_config=swarm_run_config(plan, mqtt), instance=instance, raise_on_error=False
        )
        assert not bad.success
        failure = bad.failure_data_for_node("plan_swarm").user_failure_data.description
        assert f"127.0.0.1:{password_broker.port}" in failure
        assert_secret_absent(instance, bad.run_id, wrong)
    output = capfd.readouterr()
    assert BROKER_PASSWORD not in output.out + output.err and wrong not in output.out + output.err


@pytest.fixture
def secret_pg_url(pg_url) -> str:
    """The test database with a planted password in its URL (the server trusts loopback)."""
    secret = f"planted-db-{uuid.uuid4().hex}"
    url = sa.engine.make_url(pg_url).set(password=secret).render_as_string(hide_password=False)
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", [recent, recent + timedelta(minutes=30)]))
    return url


def s3_object_store(endpoint: str, *, create: bool) -> S3ObjectStoreResource:
    bucket = f"iotswarm-rel-secret-{uuid.uuid4().hex[:12]}"
    s3 = S3Resource(
        endpoint_url=endpoint,
        region_name="eu-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    )
    if create:
        boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
    return S3ObjectStoreResource(s3=s3, bucket=bucket, prefix=PREFIX, max_attempts=1)


def test_database_and_s3_secrets_never_reach_the_export_runs_records(
    secret_pg_url, s3_endpoint, tmp_path, monkeypatch, capfd
):
    db_secret = sa.engine.make_url(secret_pg_url).password
    aws_secret = f"planted-aws-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("IOTSWARM_REL_DB_URL", secret_pg_url)
    closed = f"http://127.0.0.1:{free_port()}"
    dead_db = sa.engine.make_url(secret_pg_url).set(port=free_port())
    monkeypatch.setenv("IOTSWARM_REL_DEAD_DB_URL", dead_db.render_as_string(hide_password=False))

    def export(
        store: S3ObjectStoreResource, url_env: str, state_dir: Path
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [cosmos_live_export],
            partition_key=SOILMET,
            resources={
                "cosmos": CosmosSourceResource(url=dg.EnvVar(url_env), retries=0),
                "object_store": store,
                "state": state_store(state_dir),
            },
            instance=instance,
            raise_on_error=False,
        )

    with dg.instance_for_test() as instance:
        stored = export(s3_object_store(s3_endpoint, create=True), "IOTSWARM_REL_DB_URL", tmp_path)
        assert stored.success
        [event] = stored.asset_materializations_for_node(cosmos_live_export.op.name)
        assert event.metadata["objects"].value == 2
        no_s3 = export(s3_object_store(closed, create=False), "IOTSWARM_REL_DB_URL", tmp_path / "b")
        assert not no_s3.success
        no_db = export(s3_object_store(closed, create=False), "IOTSWARM_REL_DEAD_DB_URL", tmp_path)
        assert not no_db.success
        for result in (stored, no_s3, no_db):
            for secret in (db_secret, aws_secret):
                assert_secret_absent(instance, result.run_id, secret)
    output = capfd.readouterr()
    for secret in (db_secret, aws_secret):
        assert secret not in output.out + output.err


def test_live_cosmos_keeps_the_config_files_password_out_of_its_dagster_home(
    pg_url, tmp_path, capfd
):
    """The command line takes the password from the old config file's ``pass`` line."""
    url = sa.engine.make_url(pg_url)
    secret = f"planted-pass-{uuid.uuid4().hex}"
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    insert_rows(pg_url, SOILMET, make_rows(SOILMET, "ALIC1", [recent]))
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='postgresql+psycopg://{url.username}:{secret}@{url.host}:{url.port}/{url.database}'\n"
        f"object_dir='{tmp_path / 'objects'}'\nstate_dir='{tmp_path / 'state'}'\n"
    )
    assert export_cli.run([str(config), SOILMET, "--dagster-home", str(home)]) == 0
    output = capfd.readouterr()
    assert "1 rows, 1 payloads, 1 objects" in output.out
    assert secret not in output.out + output.err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1
        assert_secret_absent(instance, runs[0].run_id, secret)
    leaked = [p for p in home.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


def test_iot_swarm_keeps_the_source_urls_password_out_of_its_runs_records(
    secret_pg_url, tmp_path, monkeypatch
):
    """`iot-swarm --source URL`: the run config holds a reference to the URL, not the URL."""
    from iotswarm_pipelines.swarm import cli as swarm_cli

    secret = sa.engine.make_url(secret_pg_url).password
    monkeypatch.setenv(SWARM_SOURCE_URL_ENV, "restored-after-the-test")
    argv = ["--source", secret_pg_url, "--dry", "--sessions-dir", str(tmp_path)]
    _, run_config, _ = swarm_cli.build(swarm_cli._parser().parse_args(argv))
    with dg.instance_for_test() as instance:
        result = cli_swarm_job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        assert result.success
        assert result.output_for_node("swarm_report").sent == 1  # ALIC1's newest row, read
        assert_secret_absent(instance, result.run_id, secret)
