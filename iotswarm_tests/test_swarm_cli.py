"""``iot-swarm`` as a user runs it: dry and real runs, interruption, exit codes, bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm.cli import main
from iotswarm_tests.services import free_port, wait_until

T0 = datetime(2024, 6, 1)
REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"


@pytest.fixture(scope="module")
def sample_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('swarm-cli') / 'cosmos.sqlite'}"
    generate(
        url,
        start=T0,
        end=T0 + timedelta(hours=3),
        sites=["ALIC1", "BALRD"],
        tables=["LEVEL1_SOILMET_30MIN"],
    )
    return url


def iot_swarm(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("executor", ["multiprocess", "celery"])
def test_dry_run_of_the_reference_csv_prints_the_report(executor):
    """The command runs its shards locally whatever executor the shell selects for Dagster."""
    proc = iot_swarm(
        "--source",
        str(REFERENCE_CSV),
        "--mode",
        "loop",
        "--per-site",
        "5",
        "--max-cycles",
        "3",
        "--sleep-time",
        "0",
        "--dry",
        "--shards",
        "2",
        env={**os.environ, "IOTSWARM_EXECUTOR": executor},
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "5 devices on 0 connections" in out
    assert "sent 15 " in out


@pytest.mark.parametrize("shards", ["1", "2"])  # in this process; one process per shard
def test_runs_land_in_the_dagster_home_instance_the_ui_shows(tmp_path, shards):
    home = tmp_path / "dagster_home"
    home.mkdir()
    proc = iot_swarm(
        "--source", str(REFERENCE_CSV), "--per-site", "2", "--max-cycles", "1",
        "--dry", "--shards", shards, "--swarm-name", "seen-in-the-ui",
        env={**os.environ, "DAGSTER_HOME": str(home)},
    )  # fmt: skip
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        report = instance.get_latest_materialization_event(dg.AssetKey(["swarm", "report"]))
    assert run.job_name == "swarm_job" and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["iotswarm/swarm"] == "seen-in-the-ui" and run.tags["iotswarm/trigger"] == "cli"
    assert report is not None and report.run_id == run.run_id


def test_real_run_at_qos1_delivers_everything_and_exits_zero(sample_url, mqtt_broker, tmp_path):
    host, port = mqtt_broker
    prefix = f"iotswarm-cli-{uuid.uuid4().hex[:8]}"
    proc = iot_swarm(
        "--source", sample_url, "--host", host, "--port", str(port), "--devices", "10",
        "--mode", "loop", "--max-cycles", "2", "--sleep-time", "0.1", "--qos", "1",
        "--verify", "--mqtt-prefix", prefix, "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "10 devices on 10 connections" in out
    assert "sent 20 " in out and "acknowledged 20" in out
    assert "delivered 20, lost 0, duplicated 0" in out
    assert re.search(r"latency p50 [\d.]+ ms", out)


def test_shards_spread_over_brokers_and_source_addresses(sample_url, broker_pair, tmp_path):
    prefix = f"iotswarm-cli-{uuid.uuid4().hex[:8]}"
    brokers = ",".join(f"127.0.0.1:{b.port}" for b in broker_pair)
    proc = iot_swarm(
        "--source", sample_url, "--devices", "6", "--shards", "2", "--brokers", brokers,
        "--source-addresses", "127.0.0.2", "--source-addresses", "127.0.0.3",
        "--mode", "loop", "--max-cycles", "2", "--sleep-time", "0.1", "--qos", "1",
        "--verify", "--mqtt-prefix", prefix, "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "delivered 12, lost 0, duplicated 0" in out
    for broker in broker_pair:
        broker.stop()  # so its log is complete
    sources = [
        set(re.findall(r"connected from ([\d.]+):\d+ as \S+", b.log_path.read_text()))
        for b in broker_pair
    ]
    assert sources == [{"127.0.0.2"}, {"127.0.0.3"}]  # shard 0 and shard 1, devices and verifier


@pytest.mark.parametrize("shards", [1, 2])  # in-process; one process per shard
def test_unlimited_cycles_stop_on_interrupt_and_still_report(
    sample_url, mqtt_broker, tmp_path, shards
):
    host, port = mqtt_broker
    name = f"iotswarm-cli-{uuid.uuid4().hex[:8]}"
    args = [
        "--shards", str(shards), "--source", sample_url, "--host", host, "--port", str(port),
        "--per-site", "3", "--mode", "loop", "--max-cycles", "0", "--sleep-time", "0.2",
        "--verify", "--mqtt-prefix", name, "--swarm-name", name, "--sessions-dir", str(tmp_path),
    ]  # fmt: skip
    proc = iot_swarm(*args)
    try:
        # The shard saves positions every progress interval: then devices are publishing.
        wait_until(lambda: any(tmp_path.glob(f"{name}.shard-*.json")), 120, "first session save")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err  # interrupted, not a success (issue 22 item 7)
    assert "6 devices on 6 connections" in out
    sent = int(re.search(r"sent (\d+) ", out).group(1))
    assert sent > 0
    assert f"delivered {sent}, lost 0" in out
    assert (tmp_path / f"{name}.json").exists()
    assert "WARNING" not in err and "\x1b[3" not in err  # no coloured Dagster record in the bar


def test_bad_input_in_a_subprocess_is_one_line_and_exit_2():
    proc = iot_swarm("--source", str(REFERENCE_CSV), "--table", "NOPE", "--dry")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "iot-swarm: error: unknown COSMOS table 'NOPE': expected one of LEVEL1_SOILMET_30MIN, "
        "LEVEL1_NMDB_1HOUR, LEVEL1_PRECIP_1MIN, LEVEL1_PRECIP_RAINE_1MIN, COSMOS_STATUS_1HOUR"
    ]
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sites", "ALIC1,BALRD"], "site(s) BALRD have no rows"),
        (["--sites", "XXXXX"], "unknown COSMOS site 'XXXXX'"),
        (["--ca-file", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        (["--username", "u", "--password-file", "/nonexistent/pw"], "cannot read --password-file"),
        (["--sleep-time", "-1"], "sleep_time must be at least 0"),
        (["--mqtt-prefix", "a/#"], "wildcard"),
        (["--source-addresses", "127.0.0.2,eth0"], "source_addresses: 'eth0' is not an IP"),
        (["--brokers", "127.0.0.1:x"], "brokers: broker '127.0.0.1:x': port 'x' is not"),
        (["--source", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "127.0.0.1"),
    ],
)
def test_bad_input_gives_one_line_before_any_device_starts(args, message, capsys):
    argv = ["--source", str(REFERENCE_CSV), *args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-swarm: error: ")
    assert message in lines[0]
    assert captured.out == ""


def test_unreachable_broker_is_bad_input(capsys):
    port = free_port()
    assert main(["--source", str(REFERENCE_CSV), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def test_password_comes_from_the_environment_not_the_command_line(monkeypatch, mqtt_broker, capsys):
    monkeypatch.setenv("IOTSWARM_MQTT_PASSWORD", "not-on-the-command-line")
    with pytest.raises(SystemExit) as exited:
        main(["--password", "secret"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --password" in capsys.readouterr().err
    assert os.environ["IOTSWARM_MQTT_PASSWORD"] == "not-on-the-command-line"


def test_mutual_tls_run_from_the_command_line(sample_url, tls_broker, tls_files, capsys):
    tls = ["--ca-file", tls_files.ca, "--cert-file", tls_files.client_cert]
    argv = [
        "--source", sample_url, "--port", str(tls_broker.port), *tls,
        "--key-file", tls_files.client_key, "--devices", "4", "--max-cycles", "2",
        "--sleep-time", "0", "--verify", "--mqtt-prefix", f"iotswarm-cli-{uuid.uuid4().hex[:8]}",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "delivered 8, lost 0, duplicated 0" in capsys.readouterr().out
    rogue = [a.replace(tls_files.client_cert, tls_files.rogue_cert) for a in argv]
    rogue = [a.replace(tls_files.client_key, tls_files.rogue_key) for a in rogue]
    assert main(rogue) == 2
    assert f"127.0.0.1:{tls_broker.port}" in capsys.readouterr().err


def test_password_file_logs_in_and_a_wrong_one_is_refused(
    sample_url, password_broker, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("IOTSWARM_MQTT_PASSWORD", "replaced-by-the-file")  # restored afterwards
    secret = tmp_path / "password"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o600)  # private, so no warning takes a line of stderr
    argv = [
        "--source", sample_url, "--port", str(password_broker.port), "--username", "swarm",
        "--password-file", str(secret), "--max-cycles", "1", "--verify",
        "--mqtt-prefix", f"iotswarm-cli-{uuid.uuid4().hex[:8]}",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "delivered 2, lost 0" in capsys.readouterr().out
    secret.write_text("wrong-pass\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "wrong-pass" not in err
