"""The old ``iot-swarm`` command tree (NERC-CEH/iot-swarm ``scripts/cli.py``) against this project.

Its own test cases (``tests/test_cli.py``: version, log config and level, sessions) with their
inputs and expected outputs, plus each command group on real SQLite files, a CSV export and a
real mutual-TLS Mosquitto, and the old tool's defaults.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines import __version__
from iotswarm_pipelines.config_formats import oracle_url
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import old_commands
from iotswarm_pipelines.swarm.cli import main

T0 = datetime(2024, 6, 1)
REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
TABLE = "LEVEL_1_SOILMET_30MIN"

# tests/test_cli.py's logging config, verbatim.
LOGGER_INI = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=sampleFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=sampleFormatter
args=(sys.stdout,)

[formatter_sampleFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s"""


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("old-tree") / "cosmos.db"
    generate(
        f"sqlite:///{path}",
        start=T0,
        end=T0 + timedelta(hours=3),
        sites=["ALIC1", "BALRD"],
        tables=["LEVEL1_SOILMET_30MIN"],
    )
    return path


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IOTSWARM_DATA_DIR", str(tmp_path))
    for name in list(old_commands._IOT_CORE_ENV.values()):
        monkeypatch.delenv(name[0], raising=False)


def old(*argv: str):
    """(config, run config, broker) the old command line assembles, without running it."""
    args = old_commands.parser().parse_args(argv)
    files = old_commands._file_settings(args.config)
    source, schema = old_commands._source(args, files)
    return old_commands._assemble(args, files, source, schema)


def test_get_version(capsys):
    assert main(["get-version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == __version__ and re.match(r"^\d+\.\d+\.\d+$", out)


def test_sessions_ls_init_rm(capsys):
    session = "theres-no-way-this-is-a-real-session"
    assert main(["sessions", "ls"]) == 0
    assert re.match(r"\[(('[\d\w-]+')+(, )*)*\]", capsys.readouterr().out)
    assert main(["sessions", "init", session]) == 0
    main(["sessions", "ls"])
    assert session in capsys.readouterr().out
    assert main(["sessions", "rm", session]) == 0
    assert capsys.readouterr().out.strip() == f'Session "{session}" deleted.'
    main(["sessions", "ls"])
    assert session not in capsys.readouterr().out
    main(["sessions", "rm", session])
    assert capsys.readouterr().out.strip() == f'Session "{session}" does not exist.'


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_log_level_set(level, capsys):
    assert main(["--log-level", level, "get-version"]) == 0
    assert f"Set log level to {level}." in capsys.readouterr().err


def test_log_config_file(tmp_path, capsys):
    (tmp_path / "logger.ini").write_text(LOGGER_INI)
    assert main(["--log-config", str(tmp_path / "logger.ini"), "get-version"]) == 0
    assert main(["--log-config", str(tmp_path / "nope.ini"), "get-version"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_looping_sqlite3_and_csv_list_sites(sample_db, capsys):
    assert main(["looping-sqlite3", "--file", str(sample_db), "list-sites", TABLE]) == 0
    assert capsys.readouterr().out.strip() == "['ALIC1', 'BALRD']"
    argv = ["looping-sqlite3", "--file", str(sample_db), "list-sites", TABLE, "--max-sites", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "['ALIC1']"
    assert main(["looping-csv", "--file", str(REFERENCE_CSV), "list-sites"]) == 0
    assert capsys.readouterr().out.strip() == "['ALIC1']"


def test_the_old_tools_defaults_apply_in_its_tree(sample_db):
    config, _, mqtt = old(
        "looping-sqlite3", "--file", str(sample_db), "mqtt", TABLE, "my-client",
        "--endpoint", "xxxx-ats.iot.eu-west-2.amazonaws.com", "--cert-path", "c.pem",
        "--key-path", "k.pem", "--ca-cert-path", "ca.pem",
    )  # fmt: skip
    assert (config.device_type, config.max_cycles, config.sleep_time) == ("basic", 0, 60.0)
    assert (config.connections, config.client_id, config.shards) == ("shared", "my-client", 1)
    # The old spelling of the table is accepted and resolved to the catalogue's name.
    assert (config.mode, config.qos, config.table) == ("loop", 1, "LEVEL1_SOILMET_30MIN")
    assert (mqtt.port, mqtt.alpn, mqtt.tls) == (443, ["x-amzn-mqtt-ca"], True)
    assert (mqtt.keepalive, mqtt.clean_session) == (1200, False)
    assert (mqtt.cert_file, mqtt.key_file, mqtt.ca_file) == ("c.pem", "k.pem", "ca.pem")


def test_iot_core_settings_come_from_the_config_file_then_the_environment(
    tmp_path, monkeypatch, sample_db
):
    config_file = tmp_path / "config.cfg"
    config_file.write_text(
        'iot_core: {\n    endpoint: "123456789.iot.eu-west-2.amazonaws.com"\n    port: 8883\n'
        '    cert_path: "xxxx.pem"\n    pri_key_path: "xxxx.key"\n'
        '    aws_ca_cert_path: "root.pem"\n}\n'
    )
    argv = ["--config", str(config_file), "looping-sqlite3", "--file", str(sample_db)]
    _, _, mqtt = old(*argv, "mqtt", TABLE, "cid")
    assert (mqtt.host, mqtt.port, mqtt.alpn) == ("123456789.iot.eu-west-2.amazonaws.com", 8883, [])
    assert (mqtt.cert_file, mqtt.key_file, mqtt.ca_file) == ("xxxx.pem", "xxxx.key", "root.pem")
    monkeypatch.setenv("IOT_SWARM_MQTT_ENDPOINT", "from-env.example")
    assert old(*argv, "mqtt", TABLE, "cid")[2].host == "from-env.example"
    assert old(*argv, "mqtt", TABLE, "cid", "--endpoint", "opt.example")[2].host == "opt.example"


def test_cosmos_group_reads_oracle_with_the_old_credentials(monkeypatch):
    argv = ["cosmos", "--dsn", "db:1521/COSMOS", "--user", "u", "--password", "p@ss"]
    args = old_commands.parser().parse_args([*argv, "mqtt", TABLE, "cid", "--dry"])
    assert old_commands._source(args, {}) == (oracle_url("db:1521/COSMOS", "u", "p@ss"), "COSMOS")
    monkeypatch.setenv("IOT_SWARM_COSMOS_PASSWORD", "from-env")
    args = old_commands.parser().parse_args(
        ["cosmos", "--dsn", "d", "--user", "u", "list-sites", TABLE]
    )
    assert old_commands._source(args, {})[0] == oracle_url("d", "u", "from-env")


def test_missing_iot_core_settings_and_password_are_one_line(sample_db, monkeypatch, capsys):
    argv = ["looping-sqlite3", "--file", str(sample_db), "mqtt", TABLE, "cid"]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "missing --endpoint, --cert-path, --key-path, --ca-cert-path" in line
    monkeypatch.delenv("IOT_SWARM_COSMOS_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["cosmos", "--dsn", "d", "--user", "u", "list-sites", TABLE]) == 2
    assert "cosmos needs a password" in capsys.readouterr().err


def test_the_old_tree_and_the_flat_options_run_the_same_job(sample_db, capsys):
    old_argv = ["looping-sqlite3", "--file", str(sample_db), "mqtt", TABLE, "cid", "--dry"]
    assert main([*old_argv, "--max-cycles", "3", "--sleep-time", "0"]) == 0
    old_report = capsys.readouterr().out
    flat = ["--source", f"sqlite:///{sample_db}", "--mode", "loop", "--device-type", "basic"]
    flat += ["--connections", "shared", "--max-cycles", "3", "--sleep-time", "0", "--dry"]
    assert main(flat) == 0
    flat_report = capsys.readouterr().out
    for report in (old_report, flat_report):
        assert "2 devices" in report and "sent 6" in report


def test_looping_sqlite3_mqtt_over_mutual_tls(sample_db, tls_broker, tls_files, capsys):
    argv = [
        "looping-sqlite3", "--file", str(sample_db), "--site", "ALIC1", "--site", "BALRD",
        "mqtt", TABLE, f"old-tree-{uuid.uuid4().hex[:6]}", "--endpoint", "127.0.0.1",
        "--port", str(tls_broker.port), "--cert-path", tls_files.client_cert,
        "--key-path", tls_files.client_key, "--ca-cert-path", tls_files.ca,
        "--max-cycles", "2", "--sleep-time", "0", "--verify",
        "--mqtt-prefix", f"old-tree-{uuid.uuid4().hex[:8]}", "--swarm-name", "old-tree",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 devices on 1 connections" in out and "delivered 4, lost 0" in out
    assert main(["sessions", "ls"]) == 0
    assert "'old-tree'" in capsys.readouterr().out


def test_client_id_needs_one_shared_connection(capsys):
    assert main(["--dry", "--client-id", "x", "--shards", "2", "--connections", "shared"]) == 2
    assert "client_id names the one shared connection" in capsys.readouterr().err


def test_test_mqtt_connects_with_the_device_certificate(tls_broker, tls_files, capsys):
    argv = [
        "test-mqtt", "device-0001", "--endpoint", "127.0.0.1", "--port", str(tls_broker.port),
        "--cert-path", tls_files.client_cert, "--key-path", tls_files.client_key,
        "--ca-cert-path", tls_files.ca,
    ]  # fmt: skip
    assert main(argv) == 0
    assert f"connected to 127.0.0.1:{tls_broker.port} as device-0001" in capsys.readouterr().out
    rogue = [a.replace(tls_files.client_cert, tls_files.rogue_cert) for a in argv]
    assert main([a.replace(tls_files.client_key, tls_files.rogue_key) for a in rogue]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert f"127.0.0.1:{tls_broker.port}" in line


def test_looping_csv_mqtt_dry(capsys):
    argv = ["looping-csv", "--file", str(REFERENCE_CSV), "mqtt", "cid", "--dry"]
    assert main([*argv, "--max-cycles", "3", "--sleep-time", "0"]) == 0
    assert "1 devices" in (out := capsys.readouterr().out) and "sent 3" in out


def test_cosmos_group_with_an_unreachable_oracle_is_one_line_without_the_password(capsys):
    argv = ["cosmos", "--dsn", "127.0.0.1:1/COSMOS", "--user", "u", "--password", "s3cretpw"]
    assert main([*argv, "mqtt", TABLE, "cid", "--dry"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "oracle+oracledb://u:***@127.0.0.1:1/COSMOS" in line and "s3cretpw" not in line


def test_an_initialised_session_is_resumed_by_the_first_run(sample_db, capsys):
    assert main(["sessions", "init", "fresh"]) == 0
    argv = ["looping-sqlite3", "--file", str(sample_db), "mqtt", TABLE, "cid", "--dry"]
    argv += ["--max-cycles", "2", "--sleep-time", "0", "--swarm-name", "fresh"]
    assert main([*argv, "--resume-session"]) == 0
    assert main([*argv, "--resume-session"]) == 0
    out = capsys.readouterr().out
    assert out.count("sent 4") == 2  # the empty session is taken, then continued
