"""Hostile input never crashes a command (SECURITY.md): property-based tests of both config file
formats and of the three command lines. Every input either works or is refused with one line:
the error classes the commands turn into exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotswarm_pipelines.config_formats import ConfigFileError, read_settings
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export.config_file import parse_config
from iotswarm_pipelines.file_options import KEYS
from iotswarm_pipelines.swarm import cli as swarm_cli
from iotswarm_pipelines.swarm import old_commands
from iotswarm_pipelines.swarm.mqtt.settings import MqttConfigError
from iotswarm_pipelines.swarm.options import SwarmConfigError

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NASTY = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "-1", "0", "1e309", "nan", "inf", "9" * 40, "'", '"', "{", "}", "\x00"]
    ),
    st.text(alphabet=string.printable, max_size=20),
)
KEY = st.sampled_from([*KEYS, "colour", "oracle", "aws", "iot_core", "x" * 50])


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


def flat_file(pairs: list[tuple[str, str]], junk: str) -> str:
    lines = [f"{key}='{value}'" for key, value in pairs]
    return "\n".join([*lines, junk]) + "\n"


def nested_file(pairs: list[tuple[str, str]]) -> str:
    body = " ".join(f'{key}: "{value}"' for key, value in pairs)
    return f"oracle: {{ {body} }}\naws: {{ bucket: x }}\n"


@SETTINGS
@given(pairs=st.lists(st.tuples(KEY, NASTY), max_size=8), junk=NASTY, nested=st.booleans())
def test_config_files_of_either_format_parse_or_say_one_line(tmp_path, pairs, junk, nested):
    path = tmp_path / "livecosmos.cfg"
    path.write_bytes(
        (nested_file(pairs) if nested else flat_file(pairs, junk)).encode("utf-8", "surrogatepass")
    )
    for read in (lambda: read_settings(path, KEYS), lambda: parse_config(path)):
        try:
            read()
        except ConfigFileError as exc:
            assert one_line(str(exc)), str(exc)
            assert str(path) in str(exc)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_config_files_of_any_bytes_parse_or_say_one_line(tmp_path, data):
    path = tmp_path / "any.cfg"
    path.write_bytes(data)
    try:
        parse_config(path)
    except ConfigFileError as exc:
        assert one_line(str(exc)), str(exc)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """The namespace, or None when the parser refused with one line and exit 2."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2), exc.code
            if exc.code == 2:
                assert one_line(err.getvalue()), err.getvalue()
            return None


SWARM_OPTIONS = [
    "--devices", "--shards", "--max-cycles", "--sleep-time", "--qos", "--mode", "--table",
    "--host", "--port", "--keepalive", "--protocol", "--mqtt-prefix", "--swarm-name",
    "--connect-rate", "--max-publish-rate", "--give-up-after", "--sites",
]  # fmt: skip


@SETTINGS
@given(pairs=st.lists(st.tuples(st.sampled_from(SWARM_OPTIONS), NASTY), max_size=5))
def test_iot_swarm_options_are_accepted_or_refused_in_one_line(pairs, monkeypatch, tmp_path):
    monkeypatch.setenv("IOTSWARM_DATA_DIR", str(tmp_path))
    argv = [part for option, value in pairs for part in (f"{option}={value}",)]
    args = parse(swarm_cli._parser(), argv)
    if args is None:
        return
    try:
        swarm_cli.build(args)  # every check that needs no broker or database
    except (SwarmConfigError, MqttConfigError, ValueError) as exc:
        assert one_line(str(exc).splitlines()[0])


OLD_COMMANDS = [
    ["cosmos", "LEVEL_1_SOILMET_30MIN", "mqtt"],
    ["looping-sqlite3"],
    ["looping-csv"],
    ["sessions", "ls"],
    ["test-mqtt"],
]


@SETTINGS
@given(
    command=st.sampled_from(OLD_COMMANDS),
    words=st.lists(
        st.one_of(NASTY, st.sampled_from(["--sleep-time", "--max-cycles", "--dsn"])), max_size=6
    ),
)
def test_the_old_command_tree_parses_or_refuses_in_one_line(command, words):
    parse(old_commands.parser(), [*command, *words])


@SETTINGS
@given(
    words=st.lists(
        st.one_of(NASTY, st.sampled_from(["all", "--since", "--until", "--dry-run", "reconcile"])),
        max_size=6,
    )
)
def test_live_cosmos_arguments_parse_or_refuse_in_one_line(words):
    parse(export_cli._parser(), ["livecosmos.cfg", *words])


@pytest.mark.parametrize("text", ["url='sqlite:///x'\nbucket='b'\n\udcff\n"])
def test_an_undecodable_config_file_is_refused_in_one_line(tmp_path, text):
    path = Path(tmp_path / "bad.cfg")
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigFileError) as exc:
        parse_config(path)
    assert one_line(str(exc.value))
