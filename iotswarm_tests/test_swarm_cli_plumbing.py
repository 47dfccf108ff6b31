"""Issue 22, item 12: ``iot-swarm`` in a pipeline that closes early, ``--config`` wherever the old
tool's commands put it, and ``sessions rm`` that removes everything of the session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.cli import main

REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
CONFIG = 'iot_core: {\n    endpoint: "127.0.0.1"\n    port: 1883\n}\n'


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback():
    """``iot-swarm … | head``: head exits before the report is written; no BrokenPipeError."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command prints anything
    args = [
        "--source", str(REFERENCE_CSV), "--mode", "loop", "--per-site", "2", "--max-cycles", "2",
        "--dry",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141  # as a shell reports a command ended by SIGPIPE


def test_config_is_accepted_after_the_command_group(tmp_path, capsys):
    config = tmp_path / "config.cfg"
    config.write_text(CONFIG)
    argv = ["looping-csv", "--config", str(config), "--file", str(REFERENCE_CSV), "list-sites"]
    assert main(argv) == 0
    assert "ALIC1" in capsys.readouterr().out


def test_config_is_accepted_after_the_action_too(tmp_path, capsys):
    config = tmp_path / "config.cfg"
    config.write_text(CONFIG)
    argv = ["looping-csv", "--file", str(REFERENCE_CSV), "list-sites", "--config", str(config)]
    assert main(argv) == 0
    assert "ALIC1" in capsys.readouterr().out


def test_config_after_the_group_wins_over_the_environment(tmp_path, monkeypatch, capsys):
    """The later ``--config`` is read, not $IOT_SWARM_CONFIG (the top-level default)."""
    monkeypatch.setenv("IOT_SWARM_CONFIG", str(tmp_path / "missing.cfg"))
    config = tmp_path / "config.cfg"
    config.write_text(CONFIG)
    argv = ["looping-csv", "--config", str(config), "--file", str(REFERENCE_CSV), "list-sites"]
    assert main(argv) == 0, capsys.readouterr().err


def test_sessions_rm_removes_the_report_too(tmp_path, capsys):
    sessions.save_shard("trial", 0, "LEVEL1_SOILMET_30MIN", "loop", {}, tmp_path)
    sessions.save_report("trial", {"sent": 1}, tmp_path)
    assert main(["sessions", "--sessions-dir", str(tmp_path), "rm", "trial"]) == 0
    assert 'Session "trial" deleted.' in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
