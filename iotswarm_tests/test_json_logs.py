"""JSON logs on request: one object a line, labelled with run, table or shard, and no secrets.

The commands run as users run them (subprocesses) against the real broker and a real SQLite
source; the formatter's redaction is checked with canary credentials.
"""

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines import json_logs, run_loggers
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_tests.test_export_cli import LIVE_COSMOS, config_for

ROOT = Path(__file__).resolve().parents[1]
TABLE = "LEVEL1_SOILMET_30MIN"
CANARY = "canary-Pa55-91c2"


def _command(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _lines(stderr: str) -> list[dict]:
    """Every stderr line parsed: a line that is not one JSON object fails the test."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines)
    for line in lines:
        assert {"time", "level", "message"} <= line.keys()
    return lines


@pytest.fixture(scope="module")
def sample_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('json-logs') / 'cosmos.sqlite'}"
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    generate(url, start=end - timedelta(hours=3), end=end, sites=["ALIC1"], tables=[TABLE])
    return url


def test_iot_swarm_logs_json_lines_with_run_swarm_and_shard_and_no_password(
    sample_url, password_broker, tmp_path
):
    secret = tmp_path / "password"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o600)  # private: no warning line before the run's own
    done = _command(
        sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
        "--source", sample_url, "--port", str(password_broker.port), "--username", "swarm",
        "--password-file", str(secret), "--max-cycles", "1", "--verify",
        "--mqtt-prefix", f"iotswarm-json-{uuid.uuid4().hex[:8]}", "--swarm-name", "json-logs",
        "--sessions-dir", str(tmp_path), "--log-level", "INFO", "--log-format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "delivered 1, lost 0" in done.stdout  # the report stays text on stdout
    lines = _lines(done.stderr)
    assert {line["run_id"] for line in lines} == {lines[0]["run_id"]}
    assert all(line["swarm"] == "json-logs" and line["job"] == "swarm_job" for line in lines)
    assert [line["shard"] for line in lines if line["step"] == "run_shard[shard_0]"] != []
    assert {line.get("shard", 0) for line in lines} == {0}
    assert "s3cret-pass" not in done.stdout + done.stderr


def test_live_cosmos_logs_json_lines_with_table_when_the_variable_says_so(tmp_path, sample_url):
    done = _command(
        str(LIVE_COSMOS),
        str(config_for(tmp_path, sample_url)),
        TABLE,
        env={json_logs.LOG_FORMAT_ENV: "json"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{TABLE}: ")  # the summary stays text on stdout
    lines = _lines(done.stderr)
    assert all(line["table"] == TABLE for line in lines)
    assert all(line["job"] == "cosmos_live_export_job" and line["run_id"] for line in lines)
    assert any("rows to send" in line["message"] for line in lines)


def test_the_old_tree_takes_the_flag_and_a_wrong_format_is_one_line():
    command = (sys.executable, "-m", "iotswarm_pipelines.swarm.cli")
    done = _command(*command, "--log-format", "json", "get-version")
    assert done.returncode == 0, done.stderr
    done = _command(*command, "get-version", env={json_logs.LOG_FORMAT_ENV: "xml"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "iot-swarm: error: IOTSWARM_LOG_FORMAT='xml': the log format is text or json"
    ]


def test_a_line_masks_url_passwords_and_credential_values_and_drops_the_trace(monkeypatch):
    monkeypatch.setenv("IOTSWARM_SOURCE_PASSWORD", CANARY)
    record = logging.LogRecord(
        "iotswarm", logging.ERROR, __file__, 1, "cannot reach %s", ("oracle://cosmos:pw9@db",), None
    )
    try:
        raise ConnectionError(f"refused: token {CANARY}\n  File 'x.py', line 3")
    except ConnectionError:
        record.exc_info = sys.exc_info()
    record.table = TABLE
    line = json.loads(json_logs.JsonFormatter().format(record))
    assert line["message"] == "cannot reach oracle://cosmos:***@db"
    assert line["error"] == "ConnectionError: refused: token ***"
    assert (line["level"], line["table"], line["logger"]) == ("ERROR", TABLE, "iotswarm")
    assert CANARY not in json.dumps(line)


def test_every_job_of_the_code_location_logs_through_the_switchable_logger():
    from iotswarm_pipelines.definitions import defs

    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        assert job.loggers["console"] is run_loggers.console_logger, job.name
