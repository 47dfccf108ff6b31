"""The open-file limit is checked while planning: too low for the largest shard's MQTT
connections is one line, exit 2, before any device starts.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import uuid

from iotswarm_tests.swarm_runs import REFERENCE_CSV


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
