"""Every command's ``--help`` shows each option's default and one example."""

from __future__ import annotations

import argparse

import pytest

from iotswarm_pipelines.cosmos.sample import cli as sample_cli
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.swarm import cli as swarm_cli
from iotswarm_pipelines.swarm import old_commands


def _with_subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _with_subcommands(sub)
    return found


PARSERS = [
    export_cli._parser(),
    export_cli._send_live_data_parser(),
    swarm_cli._parser(),
    sample_cli._parser(),
    *_with_subcommands(old_commands.parser()),
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_help_shows_every_default_and_an_example(parser):
    text = parser.format_help()
    assert "example: " in text
    for action in parser._actions:
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and shown:
            help_text = parser._get_formatter()._expand_help(action)
            assert "default" in help_text, f"{parser.prog} {action.option_strings[0]}"
