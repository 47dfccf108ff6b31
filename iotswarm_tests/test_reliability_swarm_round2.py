"""Issue 13, items 10-13: the swarm stops on SIGTERM, checks its limits while planning, keeps
every time in UTC and ends on its own when the broker is gone for good.

``iot-swarm`` runs as a real process against real Mosquitto brokers; every process it starts
carries a marker in its environment, so the tests can see that none outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import sessions
from iotswarm_tests.mosquitto_fixtures import Mosquitto
from iotswarm_tests.services import wait_until

REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
MARK = "IOTSWARM_TEST_MARK"
SOILMET = "LEVEL1_SOILMET_30MIN"


def iot_swarm(*args: str, mark: str = "", env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), MARK: mark},
    )


def marked_processes(mark: str) -> list[int]:
    """Every live process whose environment carries ``mark`` (children inherit it)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie publishes nothing and holds no socket
                    found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


@pytest.fixture
def mark() -> Iterator[str]:
    """A marker for the test's swarm processes; any left at the end are killed, so a failing
    test cannot leave publishers behind."""
    value = uuid.uuid4().hex
    yield value
    for pid in marked_processes(value):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --- 11. SIGTERM with two or more shards --------------------------------------------------------


@pytest.mark.parametrize("target", ["parent", "every process"])  # timeout/Docker; systemd
def test_sigterm_stops_every_shard_saves_the_session_and_reports(
    mqtt_broker, tmp_path, target, mark
):
    host, port = mqtt_broker
    name = f"iotswarm-term-{uuid.uuid4().hex[:8]}"
    proc = iot_swarm(
        "--shards", "2", "--source", str(REFERENCE_CSV), "--host", host, "--port", str(port),
        "--per-site", "4", "--mode", "loop", "--max-cycles", "0", "--sleep-time", "0.2",
        "--verify", "--mqtt-prefix", name, "--swarm-name", name, "--sessions-dir", str(tmp_path),
        mark=mark,
    )  # fmt: skip
    try:
        # Both shards save positions every progress interval: then both are publishing.
        wait_until(lambda: len(list(tmp_path.glob(f"{name}.shard-*.json"))) == 2, 120, "shards")
        pids = [proc.pid] if target == "parent" else marked_processes(mark)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err  # interrupted, not a success (issue 22 item 7)
    assert "4 devices on 4 connections" in out
    sent = int(re.search(r"sent (\d+) ", out).group(1))
    assert sent > 0
    assert f"delivered {sent}, lost 0" in out
    assert (tmp_path / f"{name}.json").exists()
    assert not list(tmp_path.glob(f"{name}.shard-*.json"))  # folded into the session
    wait_until(lambda: not marked_processes(mark), 30, "every swarm process gone")


def test_a_killed_parent_leaves_no_publishing_shard(mqtt_broker, tmp_path, mark):
    """SIGKILL cannot be handled; the detached run notices its parent is gone and stops."""
    host, port = mqtt_broker
    name = f"iotswarm-kill-{uuid.uuid4().hex[:8]}"
    proc = iot_swarm(
        "--shards", "2", "--source", str(REFERENCE_CSV), "--host", host, "--port", str(port),
        "--per-site", "2", "--mode", "loop", "--max-cycles", "0", "--sleep-time", "0.2",
        "--swarm-name", name, "--sessions-dir", str(tmp_path), mark=mark,
    )  # fmt: skip
    wait_until(lambda: len(list(tmp_path.glob(f"{name}.shard-*.json"))) == 2, 120, "shards")
    proc.kill()
    proc.wait(timeout=30)
    wait_until(lambda: not marked_processes(mark), 60, "every swarm process gone")
    assert (tmp_path / f"{name}.json").exists()  # the report step still ran and saved it


# --- 13. the open-file limit, checked while planning ---------------------------------------------


def _open_files(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_open_file_limit_too_low_is_one_line_exit_2_before_any_device(mqtt_broker, tmp_path):
    """``--devices 3000`` under ``ulimit -n 1024``: one shard would need 3,065 open files."""
    host, port = mqtt_broker
    name = f"iotswarm-nofile-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable, "-m", "iotswarm_pipelines.swarm.cli", "--source", str(REFERENCE_CSV),
        "--host", host, "--port", str(port), "--devices", "3000", "--mode", "loop",
        "--swarm-name", name, "--sessions-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, preexec_fn=_open_files(1024)
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-swarm: error: "), result.stderr
    assert "open-file limit 1024" in lines[0] and "ulimit -n" in lines[0], lines
    assert result.stdout == ""
    assert not list(tmp_path.iterdir())  # no session: nothing started


# --- 12. --history-start with a UTC offset, under any TZ ----------------------------------------

T0 = datetime(2024, 6, 1)


@pytest.fixture(scope="module")
def half_hourly_sources(tmp_path_factory) -> dict[str, str]:
    """ALIC1 rows every 30 minutes from 2024-06-01 00:00 UTC: a CSV export and a database."""
    folder = tmp_path_factory.mktemp("history-start")
    header, row = REFERENCE_CSV.read_text().splitlines()[:2]
    values = row.split(",")
    lines = [header]
    for k in range(12):
        values[1] = (T0 + timedelta(minutes=30 * k)).isoformat()
        lines.append(",".join(values))
    csv = folder / "alic1.csv"
    csv.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{folder / 'cosmos.sqlite'}"
    generate(url, start=T0, end=T0 + timedelta(hours=6), sites=["ALIC1"], tables=[SOILMET])
    return {"csv": str(csv), "database": url}


@pytest.mark.parametrize("source", ["csv", "database"])
def test_history_start_with_an_offset_sends_the_same_rows_under_any_tz(
    half_hourly_sources, tmp_path, source
):
    """03:00+01:00 is 02:00 UTC: the first row after it is 02:30 UTC whatever ``TZ`` says."""
    first_rows = {}
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        name = f"iotswarm-tz-{uuid.uuid4().hex[:8]}"
        result = subprocess.run(
            [
                sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
                "--source", half_hourly_sources[source], "--sites", "ALIC1", "--mode", "replay",
                "--history-start", "2024-06-01T03:00+01:00", "--max-cycles", "2", "--speed",
                "1e9", "--dry", "--swarm-name", name, "--sessions-dir", str(tmp_path),
            ],
            capture_output=True, text=True, timeout=120, env={**os.environ, "TZ": tz},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        session = sessions.load_session(name, tmp_path)
        first_rows[tz] = session.positions["ALIC1"].last_time
    # Two messages sent: 02:30 and 03:00 UTC, the newest being the saved position.
    assert set(first_rows.values()) == {datetime(2024, 6, 1, 3, 0)}, first_rows


# --- 10. broker gone for good ------------------------------------------------------------------


@pytest.fixture
def private_broker(tmp_path_factory) -> Iterator[Mosquitto]:
    """A plain broker of the test's own, which it may stop for good."""
    config = "listener {port} 127.0.0.1\nallow_anonymous true\n"
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-gone"), config).start()
    yield broker
    broker.stop()


def test_broker_gone_for_good_ends_the_run_non_zero_counting_the_unsent(
    tmp_path, mark, private_broker
):
    """The broker stops once both shards publish and never comes back: after give_up_after
    the run ends by itself, exit 1, the report says planned = sent + unsent."""
    name = f"iotswarm-gone-{uuid.uuid4().hex[:8]}"
    devices, cycles = 4, 200
    proc = iot_swarm(
        "--shards", "2", "--source", str(REFERENCE_CSV), "--port", str(private_broker.port),
        "--per-site", str(devices), "--mode", "loop", "--max-cycles", str(cycles),
        "--sleep-time", "0.2", "--give-up-after", "3", "--swarm-name", name,
        "--sessions-dir", str(tmp_path), mark=mark,
    )  # fmt: skip
    wait_until(lambda: len(list(tmp_path.glob(f"{name}.shard-*.json"))) == 2, 120, "shards")
    private_broker.stop()
    out, err = proc.communicate(timeout=180)  # a safety net: the run must end on its own
    assert proc.returncode == 1, err
    planned = re.search(r"planned (\d+) = sent (\d+) \+ skipped (\d+) \+ unsent (\d+)", out)
    assert planned, out
    total, sent, skipped, unsent = map(int, planned.groups())
    assert total == devices * cycles and skipped == 0
    assert sent + unsent == total and 0 < sent < total, out
    assert "gave up" in out and "give_up_after" in out, out
    assert (tmp_path / f"{name}.json").exists()  # positions saved: a resume sends no row twice
    wait_until(lambda: not marked_processes(mark), 30, "every swarm process gone")
