"""Every command answers ``--help`` and bad arguments before Dagster, pandas, SQLAlchemy, numpy
or boto3 is imported, and says exactly what it said before they were made lazy (issue 22, item
14). The installed console scripts run as users run them; ``PYTHONPROFILEIMPORTTIME`` makes
the interpreter list every module it imports on stderr. How fast that is:
benchmarks/bench_cli_startup.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos.sample import cli as sample_cli
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export import reconcile_cli
from iotswarm_pipelines.swarm import cli as swarm_cli
from iotswarm_pipelines.swarm import old_commands

HEAVY = ("dagster", "pandas", "sqlalchemy", "numpy", "boto3")
IMPORT_TIME = "import time:"
COLUMNS = "100"


def _run(command: str, *args: str) -> tuple[int, str, str, set[str]]:
    """(exit status, stdout, stderr without the import lines, top-level packages imported)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "COLUMNS": COLUMNS}
    script = Path(sys.executable).with_name(command)
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    lines = done.stderr.splitlines(keepends=True)
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith(IMPORT_TIME)
    }
    stderr = "".join(line for line in lines if not line.startswith(IMPORT_TIME))
    return done.returncode, done.stdout, stderr, imported


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


HELPS = {
    ("live-cosmos",): export_cli._parser,
    ("live-cosmos", "send-live-data"): export_cli._send_live_data_parser,
    ("live-cosmos", "reconcile"): reconcile_cli._parser,
    ("iot-swarm",): swarm_cli._parser,
    ("iot-swarm", "looping-sqlite3", "mqtt"): lambda: _subparser(
        old_commands.parser(), "looping-sqlite3", "mqtt"
    ),
    ("cosmos-sample",): sample_cli._parser,
}


@pytest.mark.parametrize("command", list(HELPS), ids=" ".join)
def test_help_is_the_parsers_and_loads_nothing_heavy(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", COLUMNS)
    code, out, err, imported = _run(*command, "--help")
    assert (code, err) == (0, "")
    assert out == HELPS[command]().format_help()
    assert not imported.intersection(HEAVY), sorted(imported.intersection(HEAVY))


BAD_ARGUMENTS = [
    (
        ("live-cosmos", "livecosmos.cfg"),
        "live-cosmos: error: the following arguments are required: table (see live-cosmos --help)",
    ),
    (
        ("live-cosmos", "send-live-data", "livecosmos.cfg"),
        "live-cosmos: error: the following arguments are required: --table "
        "(see live-cosmos --help)",
    ),
    (
        ("live-cosmos", "reconcile", "livecosmos.cfg", "all"),
        "live-cosmos reconcile: error: the following arguments are required: --since "
        "(see live-cosmos reconcile --help)",
    ),
    (
        ("iot-swarm", "--nope"),
        "iot-swarm: error: unrecognized arguments: --nope (see iot-swarm --help)",
    ),
    (
        ("iot-swarm", "sessions", "bogus"),
        "iot-swarm sessions: error: argument ACTION: invalid choice: 'bogus' (choose from 'ls', "
        "'init', 'rm') (see iot-swarm sessions --help)",
    ),
    (
        ("cosmos-sample", "--nope"),
        "cosmos-sample: error: unrecognized arguments: --nope (see cosmos-sample --help)",
    ),
]


@pytest.mark.parametrize(
    ("argv", "line"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_are_one_line_exit_2_and_load_nothing_heavy(argv, line):
    code, out, err, imported = _run(*argv)
    assert (code, out, err) == (2, "", line + "\n")
    assert not imported.intersection(HEAVY), sorted(imported.intersection(HEAVY))


def test_a_command_past_its_parser_loads_dagster(tmp_path):
    """The checks above see imports at all: past the parser, the export loads Dagster."""
    code, _, err, imported = _run("live-cosmos", str(tmp_path / "missing.cfg"), "all")
    assert code == 2 and err.startswith("live-cosmos: error: ")
    assert "dagster" in imported
