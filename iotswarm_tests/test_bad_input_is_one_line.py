"""Issue 5, item 12: bad input anywhere is one clear line, for the CLIs and Dagster run config.

Every case must name the problem in one stderr line (exit 2, no traceback) or fail the run, and
leave the state alone: no session, state or object file is written.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos.sample.cli import main as sample_main
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.swarm.cli import main as swarm_main
from iotswarm_pipelines.swarm.launch import cli_swarm_job
from iotswarm_tests.export_fixtures import (
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    sqlite_url,
    state_store,
)
from iotswarm_tests.services import free_port

REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def one_error_line(call, argv: list[str], capsys, prog: str) -> str:
    """Runs a CLI entry point in-process; returns its single stderr line (exit 2 checked)."""
    try:
        code = call(argv)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def garbage_pem(tmp_path) -> str:
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--qos", "3"], "argument --qos: invalid choice: 3"),
        (["--no-send-probability", "150"], "no_send_probability is a percentage: 0 to 100"),
        (["--sleep-time", "-0.5"], "sleep_time must be at least 0"),
        (["--sleep-time", "soon"], "argument --sleep-time: invalid float value: 'soon'"),
        (["--max-cycles", "-1"], "max_cycles must be at least 0"),
        (["--devices", "0"], "devices must be at least 1"),
        (["--shards", "0"], "shards must be at least 1"),
        (["--rows-per-message", "0"], "rows_per_message must be at least 1"),
        (["--mode", "replay", "--speed", "0"], "speed must be greater than 0"),
        (["--connect-rate", "-1"], "connect_rate must be at least 0"),
        (["--history-start", "yesterday"], "history_start 'yesterday' is not an ISO time"),
        (["--table", "LEVEL1_NOPE"], "unknown COSMOS table 'LEVEL1_NOPE'"),
        (["--sites", "NOPE1"], "unknown COSMOS site 'NOPE1'"),
        (["--port", "70000"], "MQTT port 70000 is out of range"),
        (["--keepalive", "-5"], "keepalive -5s is too short"),
        (["--ca-file", "GARBAGE"], "is not a PEM certificate"),
        (["--cert-file", "GARBAGE", "--key-file", "/nonexistent/k.pem"], "'/nonexistent/k.pem'"),
        (["--source", "nosuchdb://host/db"], "cannot use this database URL"),
        (["--source", "/nonexistent/export.csv"], "'/nonexistent/export.csv' is neither"),
        (["--unknown-option"], "unrecognized arguments: --unknown-option"),
    ],
)
def test_iot_swarm_bad_input(args, message, garbage_pem, tmp_path, capsys):
    sessions = tmp_path / "sessions"
    args = [garbage_pem if a == "GARBAGE" else a for a in args]
    source = [] if "--source" in args else ["--source", str(REFERENCE_CSV)]
    argv = [*source, "--sessions-dir", str(sessions), "--dry", *args]
    assert message in one_error_line(swarm_main, argv, capsys, "iot-swarm")
    assert files_under(sessions) == []


def test_iot_swarm_unresolvable_broker_host_is_one_line(tmp_path, capsys):
    argv = ["--source", str(REFERENCE_CSV), "--host", "no-such-broker.invalid"]
    line = one_error_line(swarm_main, [*argv, "--sessions-dir", str(tmp_path)], capsys, "iot-swarm")
    assert "no-such-broker.invalid" in line
    assert files_under(tmp_path) == []


@pytest.fixture
def export_db(tmp_path) -> str:
    url = sqlite_url(tmp_path / "db")
    (tmp_path / "db").mkdir()
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", [recent]))
    return url


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("url='{url}'\nsites='NOPE1'\n", [], "unknown COSMOS site 'NOPE1'"),
        ("url='{url}'\nfallback_hours='-1'\n", [], "line 4: fallback_hours must be"),
        ("url='{url}'\nfallback_hours='nan'\n", [], "line 4: fallback_hours must be a number"),
        ("url='{url}'\nfallback_hours='lots'\n", [], "hours, 0 or more (1000000 means every row)"),
        ("url='{url}'\nbatch_size='0'\n", [], "line 4: batch_size must be"),
        ("url='{url}'\nbatch_size='many'\n", [], "line 4: batch_size must be"),
        ("url='{url}'\ncolour='red'\n", [], "line 4: unknown key 'colour'"),
        ("url='{url}'\nthis is no setting\n", [], "line 4: not a key='value' line"),
        ("\x00\x01 binary junk\n", [], "line 3: not a key='value' line"),
        ("", [], "missing dsn, user, pass"),
        ("url='::::'\n", [], "line 3: not a valid database URL/DSN"),
        ("url='nosuchdb://host/db'\n", [], "cannot use this database URL"),
        ("url='{url}'\n", ["--since", "yesterday"], "not an ISO 8601 date/time"),
        ("url='{url}'\n", ["--since", "2024-06-02", "--until", "2024-06-01"], "must be later"),
        ("url='{url}'\n", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
        ("url='{url}'\n", ["TABLE=LEVEL1_NOPE"], "unknown COSMOS table 'LEVEL1_NOPE'"),
    ],
)
def test_live_cosmos_bad_input(config, args, message, export_db, tmp_path, capsys):
    work = tmp_path / "work"
    head = f"object_dir='{work / 'objects'}'\nstate_dir='{work / 'state'}'\n"
    path = tmp_path / "livecosmos.cfg"
    path.write_text(head + config.format(url=export_db))
    table = [a.removeprefix("TABLE=") for a in args if a.startswith("TABLE=")] or [SOILMET]
    options = [a for a in args if not a.startswith("TABLE=")]
    line = one_error_line(export_cli.run, [str(path), table[0], *options], capsys, "live-cosmos")
    assert message in line
    assert files_under(work) == []


def test_live_cosmos_bad_s3_endpoint_is_named_before_anything_runs(export_db, tmp_path, capsys):
    path = tmp_path / "livecosmos.cfg"
    state = tmp_path / "state"
    path.write_text(
        f"url='{export_db}'\nbucket='iotswarm-rel-nope'\nendpoint_url='not a url'\n"
        f"state_dir='{state}'\n"
    )
    line = one_error_line(export_cli.run, [str(path), SOILMET], capsys, "live-cosmos")
    assert "line 3: endpoint_url must be an http:// or https:// URL" in line
    assert not state.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--tables", "LEVEL1_NOPE"],
        ["--sites", "NOPE1"],
        ["--days", "-1"],
        ["--start", "2026-01-02", "--end", "2026-01-01"],
        ["--start", "tomorrow-ish"],
        ["--workers", "zero"],
    ],
)
def test_cosmos_sample_bad_input_writes_no_database(argv, tmp_path, capsys):
    target = tmp_path / "cosmos.sqlite"
    one_error_line(
        sample_main, ["--url", f"sqlite:///{target}", *argv, "--quiet"], capsys, "cosmos-sample"
    )
    assert not target.exists()


def test_console_script_prints_one_line_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", "--qos", "3"],
        capture_output=True,
        text=True,
        timeout=120,  # a safety net, not a timing assertion
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "iot-swarm: error: argument --qos: invalid choice: 3 (choose from 0, 1) "
        "(see iot-swarm --help)"
    ]


def swarm_run(plan: dict, mqtt: dict, sessions: Path) -> dg.ExecuteInProcessResult:
    return cli_swarm_job.execute_in_process(
        run_config={
            "ops": {"plan_swarm": {"config": {"sessions_dir": str(sessions), **plan}}},
            "resources": {
                "mqtt": {"config": {"port": free_port(), **mqtt}},
                "cosmos": {"config": {"url": "sqlite:////nonexistent/unused.sqlite"}},
            },
        },
        raise_on_error=False,
    )


@pytest.mark.parametrize(
    ("plan", "mqtt", "message"),
    [
        ({"qos": 3}, {}, "qos 3 is not supported"),
        ({"no_send_probability": 150}, {}, "no_send_probability is a percentage"),
        ({"sleep_time": -1}, {}, "sleep_time must be at least 0"),
        ({"history_start": "yesterday", "mode": "loop"}, {}, "history_start 'yesterday'"),
        ({"sites": ["NOPE1"]}, {}, "unknown COSMOS site 'NOPE1'"),
        ({}, {"ca_file": "GARBAGE"}, "is not a PEM certificate"),
        ({}, {"cert_file": "/nonexistent/c.pem"}, "'/nonexistent/c.pem' does not exist"),
        ({}, {"port": 70000}, "MQTT port 70000 is out of range"),
        ({"dry": False}, {}, "connection refused"),  # nothing listens on the port
    ],
)
def test_swarm_job_run_config_fails_with_one_line(plan, mqtt, message, garbage_pem, tmp_path):
    mqtt = {k: garbage_pem if v == "GARBAGE" else v for k, v in mqtt.items()}
    sessions = tmp_path / "sessions"
    result = swarm_run({"source": str(REFERENCE_CSV), "dry": True, **plan}, mqtt, sessions)
    assert not result.success
    description = result.failure_data_for_node("plan_swarm").user_failure_data.description
    assert message in description and "\n" not in description
    assert files_under(sessions) == []


def test_swarm_job_refuses_an_unknown_table_as_invalid_config(tmp_path):
    """The launchpad offers the catalogue's tables as a choice; anything else is refused before
    the run starts, naming the field and the value."""
    sessions = tmp_path / "sessions"
    with pytest.raises(dg.DagsterInvalidConfigError, match="table not in enum type TableName"):
        swarm_run({"source": str(REFERENCE_CSV), "dry": True, "table": "LEVEL1_NOPE"}, {}, sessions)
    assert files_under(sessions) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sites": ["NOPE1"]}, "unknown COSMOS site 'NOPE1'"),
        ({"fallback_hours": -1}, "fallback_hours must be a number of hours, 0 or more, got -1"),
        ({"fallback_hours": float("nan")}, "0 or more, got nan (a huge value such as 1000000"),
        ({"batch_size": 0}, "batch_size must be 1 or more rows per payload, got 0"),
        ({"since": "yesterday"}, "since='yesterday' is not an ISO 8601 date/time"),
        ({"until": "2024-06-01T00:00+01:00"}, "has a time zone"),
        ({"since": "2024-06-02", "until": "2024-06-01"}, "must be later than since"),
    ],
)
def test_export_asset_run_config_fails_with_one_line_and_writes_nothing(
    config, message, export_db, tmp_path
):
    resources = {
        "cosmos": CosmosSource(url=export_db),
        "object_store": local_store(tmp_path / "work"),
        "state": state_store(tmp_path / "work"),
    }
    result = dg.materialize(
        [cosmos_live_export],
        partition_key=SOILMET,
        resources=resources,
        run_config={"ops": {cosmos_live_export.op.name: {"config": config}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node(cosmos_live_export.op.name).user_failure_data
    assert message in failure.description and "\n" not in failure.description
    assert files_under(tmp_path / "work") == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://host/db", "cannot use this database URL"),
        ("postgresql+psycopg://u:pw@127.0.0.1:{port}/x", "Connection refused"),
    ],
)
def test_export_asset_bad_source_url_fails_naming_it_and_writes_no_state(url, message, tmp_path):
    resources = {
        "cosmos": CosmosSource(url=url.format(port=free_port()), retries=0),
        "object_store": local_store(tmp_path / "work"),
        "state": state_store(tmp_path / "work"),
    }
    result = dg.materialize(
        [cosmos_live_export], partition_key=SOILMET, resources=resources, raise_on_error=False
    )
    assert not result.success
    error = result.failure_data_for_node(cosmos_live_export.op.name).error
    while error.cause is not None:
        error = error.cause
    assert message in error.message and "pw@" not in error.message
    assert error.message.strip().count("\n") == 0, error.message
    written = files_under(tmp_path / "work")
    assert [p for p in written if not p.name.endswith(".lock")] == []  # the lock file only
