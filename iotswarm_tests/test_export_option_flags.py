"""The export's options are declared once, in ``file_options.ExportOptions`` (issue 24 item 3):
``live-cosmos``'s flags, the config file's keys and ``iot-swarm``'s payload options take their
type and wording from the model, and the old tools' command lines still parse as they did.
"""

from __future__ import annotations

import argparse

import pytest

from iotswarm_pipelines.export import cli
from iotswarm_pipelines.export.config_file import parse_config
from iotswarm_pipelines.file_options import ExportOptions, LiveRunOptions
from iotswarm_pipelines.payload_options import PayloadOptions
from iotswarm_pipelines.swarm import cli as swarm_cli


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    [action] = [a for a in parser._actions if flag in a.option_strings]
    return action


FLAGS = [
    (cli._parser, "--prog-name", "prog_name"),
    (cli._parser, "--strict-json", "strict_json"),
    (cli._send_live_data_parser, "--prog-name", "prog_name"),
    (cli._send_live_data_parser, "--strict-json", "strict_json"),
    (cli._send_live_data_parser, "--site", "sites"),
    (cli._send_live_data_parser, "--fallback-hours", "fallback_hours"),
    (cli._send_live_data_parser, "--batch-size", "batch_size"),
]


@pytest.mark.parametrize(("parser", "flag", "name"), FLAGS, ids=[f[1] for f in FLAGS])
def test_live_cosmos_help_is_the_models_description_and_says_the_config_file(parser, flag, name):
    action = _action(parser(), flag)
    description = ExportOptions.model_fields[name].description
    assert description and action.help
    assert action.dest == name
    assert action.help.startswith(description)
    assert f"(default: the config file's {name}" in action.help


RUN_FLAGS = [
    (cli._parser, "--since", "since"),
    (cli._parser, "--until", "until"),
    (cli._parser, "--dry-run", "dry_run"),
    (cli._send_live_data_parser, "--dry", "dry_run"),
]


@pytest.mark.parametrize(("parser", "flag", "name"), RUN_FLAGS, ids=[f[1] for f in RUN_FLAGS])
def test_a_runs_own_flags_are_the_models_and_never_the_config_files(parser, flag, name):
    """--since, --until and --dry-run (--dry) mean what the launchpad's fields do; the config
    file cannot set them, so their help never sends the reader there."""
    action = _action(parser(), flag)
    field = LiveRunOptions.model_fields[name]
    assert action.dest == name
    assert action.help == field.description
    assert action.default == field.default
    assert name not in ExportOptions.model_fields


def test_a_dry_run_and_a_replay_window_parse_as_the_old_command_lines_wrote_them():
    flat = cli._parser().parse_args(
        ["my.cfg", "all", "--since", "2024-06-01T00:00", "--until", "2024-06-02T00:00", "--dry-run"]
    )
    assert (flat.since, flat.until, flat.dry_run) == ("2024-06-01T00:00", "2024-06-02T00:00", True)
    assert cli._parser().parse_args(["my.cfg", "all"]).dry_run is False
    old = cli._send_live_data_parser().parse_args(["my.cfg", "--table", "all", "--dry"])
    assert old.dry_run is True


@pytest.mark.parametrize("name", ["prog_name", "strict_json"])
def test_iot_swarm_says_the_payload_options_as_the_export_does(name):
    action = _action(swarm_cli._parser(), "--" + name.replace("_", "-"))
    assert PayloadOptions.model_fields[name].description in (action.help or "")


def test_the_old_tools_flags_repeat_and_convert_as_before():
    args = cli._send_live_data_parser().parse_args(
        [
            "c.cfg",
            "--table",
            "all",
            "--site",
            "ALIC1",
            "--site",
            "BALRD",
            "--batch-size",
            "1",
            "--batch-size",
            "60",
            "--fallback-hours",
            "1e6",
            "--strict-json",
        ]
    )
    assert (args.sites, args.batch_size, args.fallback_hours) == (["ALIC1", "BALRD"], [1, 60], 1e6)
    assert (args.strict_json, args.prog_name) == (True, None)
    left_out = cli._parser().parse_args(["c.cfg", "all"])
    assert (left_out.strict_json, left_out.prog_name) == (None, None)  # the config file's apply


def test_the_config_files_export_options_are_the_models(tmp_path):
    path = tmp_path / "c.cfg"
    path.write_text(
        "dsn='db:1521/COSMOS'\nuser='up'\npass='p'\nbucket='b'\nprog_name='CPU:x.CR1X'\n"
        "strict_json=yes\nsites='ALIC1, alic1,BALRD'\nbatch_size=7\nfallback_hours=inf\n"
        "pushgateway='127.0.0.1:9091'\n"
    )
    config = parse_config(path)
    assert set(config.options) == set(ExportOptions.model_fields)
    assert config.export_options == ExportOptions(
        prog_name="CPU:x.CR1X",
        strict_json=True,
        sites=["ALIC1", "BALRD"],
        batch_size=7,
        fallback_hours=float("inf"),
        pushgateway="127.0.0.1:9091",
    )
    path.write_text("dsn='db:1521/COSMOS'\nuser='up'\npass='p'\nbucket='b'\n")
    assert parse_config(path).export_options == ExportOptions()
