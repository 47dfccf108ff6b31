"""SIGTERM stops ``iot-swarm`` as ^C does, and a SIGKILLed parent leaves no shard behind.

SIGTERM to the parent (as ``timeout`` or Docker send it) or to every process of the run (as
systemd does) stops every shard, saves the session and reports; SIGKILL cannot be handled, so
the detached run notices its parent is gone and stops. Real Mosquitto, real processes.
"""

from __future__ import annotations

import os
import re
import signal
import uuid

import pytest

from iotswarm_tests.services import wait_until
from iotswarm_tests.swarm_runs import REFERENCE_CSV, iot_swarm, marked_processes


@pytest.mark.parametrize("target", ["parent", "every process"])  # timeout/Docker; systemd
def test_sigterm_stops_every_shard_saves_the_session_and_reports(
    mqtt_broker,
    tmp_path,
    target,
    mark,
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
