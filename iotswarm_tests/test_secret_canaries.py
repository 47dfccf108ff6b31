"""No secret leaks anywhere (SECURITY.md): unique canary secrets, given the documented ways, are
looked for in every child process's environment and command line while the commands run, in
what they print, and afterwards in every file they wrote (the Dagster instance's run storage,
event log and compute logs, sessions, reports, state, exported objects).

The swarm runs verified at QoS 1 in two shards against a Mosquitto that requires a password,
reading a PostgreSQL source whose role has a canary password; the export and reconcile run
against a moto S3 server given a canary secret key. The user's own inputs (the parent's
environment, the config file) necessarily hold the canaries and are not searched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import boto3
import psutil
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests.mosquitto_fixtures import Mosquitto, start_password_broker

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TABLE = "LEVEL1_SOILMET_30MIN"
TAG = uuid.uuid4().hex[:10]
CANARY_MQTT = f"canarymqtt{TAG}"
CANARY_DB = f"canarydb{TAG}"
CANARY_AWS = f"canaryaws{TAG}"
CANARIES = [c.encode() for c in (CANARY_MQTT, CANARY_DB, CANARY_AWS)]


@dataclass
class Seen:
    """What the command's descendants showed while it ran, and what it printed."""

    processes: dict[int, tuple[str, bytes, bytes]]  # pid -> (name, environ, cmdline)
    stdout: str
    stderr: str
    returncode: int


def leaks(blob: bytes) -> list[str]:
    return [c.decode() for c in CANARIES if c in blob]


def run_watched(argv: list[str], env: dict[str, str], timeout: float = 600) -> Seen:
    """Run a command, reading every descendant's /proc environ and cmdline until it ends."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes: dict[int, tuple[str, bytes, bytes]] = {}
    deadline = time.monotonic() + timeout
    parent = psutil.Process(proc.pid)
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for child in children:
            if child.pid in processes:
                continue
            try:
                environ = Path(f"/proc/{child.pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                processes[child.pid] = (child.name(), environ, cmdline)
            except (OSError, psutil.Error):
                continue  # gone meanwhile
        time.sleep(0.02)  # a sampling interval, not an ordering: the loop ends with the command
    out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    return Seen(processes, out.decode(), err.decode(), proc.returncode)


def files_with_canaries(*folders: Path, skip: tuple[Path, ...] = ()) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path not in skip and (hit := leaks(path.read_bytes())):
                found[str(path)] = hit
    return found


def open_files(*paths: Path) -> list[str]:
    """Those of ``paths`` that group or others may read or write."""
    return [f"{p} {p.stat().st_mode & 0o777:04o}" for p in paths if p.stat().st_mode & 0o077]


def assert_no_leak(seen: Seen) -> None:
    for pid, (name, environ, cmdline) in seen.processes.items():
        assert not leaks(environ), f"child {pid} ({name}) has a secret in its environment"
        assert not leaks(cmdline), f"child {pid} ({name}) has a secret on its command line"
    assert not leaks((seen.stdout + seen.stderr).encode()), "a secret was printed"


def handoff_folders() -> set[str]:
    bases = {tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()}
    return {str(p) for base in bases for p in Path(base).glob("iotswarm-secrets-*")}


@pytest.fixture(scope="module")
def canary_source(pg_server_url) -> Iterator[str]:
    """A PostgreSQL database of recent sample rows, owned by a role with a canary password."""
    role, name = f"canary_{TAG}", f"iotswarm_canary_{TAG}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{CANARY_DB}'"))
        conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER {role}'))
    server = sa.engine.make_url(pg_server_url)
    url = server.set(username=role, password=CANARY_DB, database=name)
    url_text = url.render_as_string(hide_password=False)
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    generate(url_text, start=end - timedelta(hours=3), end=end, sites=["ALIC1", "BALRD"])
    try:
        yield url_text
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.fixture
def canary_broker(tmp_path) -> Iterator[Mosquitto]:
    """Anonymous clients refused; user `swarm` with the canary password."""
    broker = start_password_broker(tmp_path, "swarm", CANARY_MQTT)
    yield broker
    broker.stop()


def instance_home(root: Path) -> Path:
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def test_swarm_secrets_reach_no_shard_environment_and_no_file(
    canary_source, canary_broker, tmp_path
):
    home, data = instance_home(tmp_path), tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "IOTSWARM_DATA_DIR": str(data),
        "IOTSWARM_MQTT_PASSWORD": CANARY_MQTT,  # the documented variables
        "IOTSWARM_SOURCE_URL": canary_source,
    }
    before = handoff_folders()
    argv = [
        str(BIN / "iot-swarm"), "--host", "127.0.0.1", "--port", str(canary_broker.port),
        "--username", "swarm", "--table", TABLE, "--devices", "4", "--shards", "2",
        "--qos", "1", "--verify", "--max-cycles", "3", "--sleep-time", "1",
        "--swarm-name", f"canary-{TAG}", "--mqtt-prefix", f"canary-{TAG}",
    ]  # fmt: skip
    seen = run_watched(argv, env)
    assert seen.returncode == 0, seen.stderr
    assert "lost 0" in seen.stdout
    shards = [p for p in seen.processes.values() if b"python" in p[2] or "python" in p[0]]
    assert len(shards) >= 2, "the shard processes were not seen"
    assert_no_leak(seen)
    assert files_with_canaries(home, data) == {}
    assert handoff_folders() == before, "the private hand-over folder was left behind"
    sessions = [p for p in data.rglob("*") if p.is_file() and "canary" in p.name]
    assert sessions and open_files(*sessions) == [], "sessions and reports are private"


def test_export_and_reconcile_secrets_reach_no_file_or_object(canary_source, s3_endpoint, tmp_path):
    bucket = f"iotswarm-canary-{TAG}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="eu-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key=CANARY_AWS,
    )
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{canary_source}'\nbucket='{bucket}'\nendpoint_url='{s3_endpoint}'\n"
        f"state_dir='{tmp_path / 'state'}'\nfallback_hours='24'\n"
    )
    config.chmod(0o600)
    home = instance_home(tmp_path)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "IOTSWARM_DATA_DIR": str(tmp_path / "data"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": CANARY_AWS,
        "AWS_DEFAULT_REGION": "eu-west-2",
    }
    exported = run_watched([str(BIN / "live-cosmos"), str(config), TABLE], env)
    assert exported.returncode == 0, exported.stderr
    today = utc_now().date()
    since = (today - timedelta(days=1)).isoformat()
    reconciled = run_watched(
        [str(BIN / "live-cosmos"), "reconcile", str(config), TABLE, "--since", since,
         "--until", today.isoformat()],
        env,
    )  # fmt: skip
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    for seen in (exported, reconciled):
        assert_no_leak(seen)
    assert files_with_canaries(tmp_path, skip=(config,)) == {}
    state = [p for p in (tmp_path / "state").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert state and open_files(*state) == [], "state files, checksums and backups are private"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]  # fmt: skip
    assert keys, "nothing was exported"
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert not leaks(body) and not leaks(key.encode()), key
