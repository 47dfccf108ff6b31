"""The AWS IoT Core path: MQTT over TLS on a front that wants ALPN ``x-amzn-mqtt-ca`` (as IoT
Core does on port 443), and IoT Core's limits checked before any device starts.

The front is ``alpn_proxy.AlpnProxy`` on loopback, forwarding to a private Mosquitto; the swarm
runs as the ``iot-swarm`` process users run.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import iot_core
from iotswarm_tests.alpn_proxy import IOT_CORE_ALPN, AlpnProxy
from iotswarm_tests.mosquitto_fixtures import Mosquitto

REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
IOT_CORE_HOST = "a1b2c3-ats.iot.eu-west-2.amazonaws.com"  # never contacted: the runs are dry


def iot_swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,  # a safety net against a hang, not a timing assertion
        check=False,
    )


@pytest.fixture(scope="module")
def alpn_front(tmp_path_factory, tls_files) -> Iterator[AlpnProxy]:
    config = "listener {port} 127.0.0.1\nallow_anonymous true\n"
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-alpn"), config).start()
    folder = Path(tls_files.ca).parent
    proxy = AlpnProxy(
        str(folder / "server.pem"), str(folder / "server.key"), ("127.0.0.1", broker.port)
    ).start()
    yield proxy
    proxy.stop()
    broker.stop()


def test_per_device_swarm_delivers_everything_through_the_alpn_front(
    alpn_front, tls_files, tmp_path
):
    name = f"iotswarm-alpn-{uuid.uuid4().hex[:8]}"
    result = iot_swarm(
        "--source", str(REFERENCE_CSV), "--port", str(alpn_front.port), "--ca-file",
        tls_files.ca, "--alpn", IOT_CORE_ALPN, "--per-site", "10", "--mode", "loop",
        "--max-cycles", "3", "--sleep-time", "0.1", "--qos", "1", "--verify",
        "--mqtt-prefix", name, "--swarm-name", name, "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "10 devices on 10 connections" in result.stdout
    assert "sent 30 " in result.stdout and "acknowledged 30" in result.stdout
    assert "delivered 30, lost 0, duplicated 0" in result.stdout
    assert alpn_front.accepted >= 10 + 1  # every device, and the verifier, came through it


def test_a_client_without_the_alpn_gets_one_clear_line(alpn_front, tls_files, tmp_path):
    refused_before = alpn_front.refused
    result = iot_swarm(
        "--source", str(REFERENCE_CSV), "--port", str(alpn_front.port), "--ca-file",
        tls_files.ca, "--mode", "loop", "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-swarm: error: "), result.stderr
    assert f"127.0.0.1:{alpn_front.port}" in lines[0] and IOT_CORE_ALPN in lines[0], lines
    assert alpn_front.refused > refused_before
    assert result.stdout == "" and not list(tmp_path.iterdir())


# --- IoT Core's limits ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_days(tmp_path_factory) -> str:
    """ALIC1, every 30 minutes for three days: enough rows for a message over 128 KB."""
    url = f"sqlite:///{tmp_path_factory.mktemp('iot-core') / 'cosmos.sqlite'}"
    start = datetime(2024, 6, 1)
    generate(
        url,
        start=start,
        end=start + timedelta(days=3),
        sites=["ALIC1"],
        tables=["LEVEL1_SOILMET_30MIN"],
    )
    return url


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rows-per-message", "130"], "payload limit: use rows_per_message"),
        (["--max-publish-rate", "0"], "max_publish_rate 0 (no limit) exceeds AWS IoT Core's 100"),
        (["--max-publish-rate", "150"], "max_publish_rate 150 exceeds AWS IoT Core's 100"),
        (["--connect-rate", "1000"], "connect_rate 1000 exceeds AWS IoT Core's 500"),
    ],
    ids=["payload", "unlimited-publish-rate", "publish-rate", "connect-rate"],
)
@pytest.mark.parametrize("target", [["--alpn", IOT_CORE_ALPN], ["--host", IOT_CORE_HOST]])
def test_iot_core_limits_are_one_line_exit_2_before_any_device(
    three_days, tmp_path, args, expected, target
):
    result = iot_swarm(
        "--source", three_days, "--mode", "loop", "--dry", "--sessions-dir", str(tmp_path),
        *target, *args,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-swarm: error: "), result.stderr
    assert expected in lines[0], lines
    assert not list(tmp_path.iterdir())  # nothing started


def test_the_same_limits_only_warn_against_another_broker(three_days, tmp_path):
    result = iot_swarm(
        "--source", three_days, "--mode", "loop", "--dry", "--sessions-dir", str(tmp_path),
        "--rows-per-message", "130", "--max-publish-rate", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("iot-swarm: warn")]
    assert len(warnings) == 2, result.stderr
    assert "payload limit" in warnings[0] and "not AWS IoT Core" in warnings[0]
    # Said once: the run's own log keeps the same checks' lines at info level.
    assert result.stderr.count("exceeds AWS IoT Core's 100") == 1, result.stderr
    assert "sent 1 " in result.stdout


def test_the_largest_message_that_fits_is_accepted(three_days, tmp_path):
    """The payload line's advice is right: the rows_per_message it names passes the check."""
    too_many = iot_swarm(
        "--source", three_days, "--mode", "loop", "--dry", "--alpn", IOT_CORE_ALPN,
        "--rows-per-message", "140", "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    fits = int(too_many.stderr.split("use rows_per_message ")[1].split()[0])
    assert 1 <= fits < 140
    result = iot_swarm(
        "--source", three_days, "--mode", "loop", "--dry", "--alpn", IOT_CORE_ALPN,
        "--rows-per-message", str(fits), "--sessions-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_limit_rules():
    """The pure rules: where IoT Core is targeted, and the payload advice's arithmetic."""
    assert iot_core.targets_iot_core(IOT_CORE_HOST, ())
    assert iot_core.targets_iot_core("127.0.0.1", (IOT_CORE_ALPN,))
    assert not iot_core.targets_iot_core("broker.example", ())
    ok = iot_core.SwarmLoad(131_072, 15_000, 9, 100, 200)
    assert iot_core.problems(ok) == []
    # A 14 KB head plus 1 KB per row: 117 rows make 131,000 bytes, 118 would not fit.
    [line] = iot_core.problems(iot_core.SwarmLoad(14_000 + 200 * 1_000, 15_000, 200, 100, 200))
    assert "use rows_per_message 117 or fewer" in line
    [line] = iot_core.problems(iot_core.SwarmLoad(140_000, 140_000, 1, 100, 200))
    assert "device_type basic" in line
