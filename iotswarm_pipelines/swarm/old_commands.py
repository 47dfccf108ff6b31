"""NERC-CEH/iot-swarm's command tree, on the swarm job the flat ``iot-swarm`` options run.

``iot-swarm [--log-config F] [--log-level L] [--config F] COMMAND``, where COMMAND is one of
``get-version``, ``test-mqtt``, ``cosmos … list-sites|mqtt``, ``looping-csv … list-sites|mqtt``,
``looping-sqlite3 … list-sites|mqtt`` and ``sessions ls|init|rm``. Every option is the options
model's (``swarm.options``), spelled the old way through ``options.Arg``; ``mqtt`` ends in
``launch.assemble`` and ``launch.run_swarm`` like the flat form, so both run the same job with the
same checks. Where the old tool's defaults differ from the flat form's, the old ones apply here
(``OLD_DEFAULTS``): basic payloads, devices that send until stopped, one mutual-TLS connection
named CLIENT_ID on port 443 with ALPN, keep-alive 1200 s, persistent session.

The IoT Core and Oracle settings come from the options, else the old tool's environment
variables (``IOT_SWARM_MQTT_ENDPOINT`` …), else the ``iot_core``/``oracle`` blocks of the
config file in ``--config`` (or ``IOT_SWARM_CONFIG``), the file the old tool's docs and tests
read them from.

Like ``cli``, this module imports only what parses the command line at first; the functions
that run import the source, the stores and ``swarm.launch``, so ``--help`` and bad arguments
answer at once.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import logging.config
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotswarm_pipelines import __version__, help_text, json_logs, secret_files
from iotswarm_pipelines.command_line import EXIT_BAD_INPUT, EXIT_OK, CommandError, Parser
from iotswarm_pipelines.config_formats import ConfigFileError, oracle_url, read_settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.swarm import options
from iotswarm_pipelines.swarm.options import (
    CONTROL_OPTIONS,
    Arg,
    BrokerOptions,
    SwarmConfigError,
    SwarmOptions,
)

if TYPE_CHECKING:
    from iotswarm_pipelines.swarm.config import SwarmConfig
    from iotswarm_pipelines.swarm.resources import MqttResource

COMMANDS = ("get-version", "test-mqtt", "cosmos", "looping-csv", "looping-sqlite3", "sessions")
TOP_OPTIONS = ("--log-config", "--log-level", "--log-format", "--config")
OLD_TABLES = (
    "LEVEL_1_SOILMET_30MIN",
    "LEVEL_1_NMDB_1HOUR",
    "LEVEL_1_PRECIP_1MIN",
    "LEVEL_1_PRECIP_RAINE_1MIN",
    "COSMOS_STATUS_1HOUR",
)
AWS_ALPN = "x-amzn-mqtt-ca"

OLD_DEFAULTS: dict[str, Any] = {
    "connections": "shared",
    "shards": 1,
    "qos": 1,
    "protocol": "3.1.1",
}
"""Run options the old tree always had: one connection (CLIENT_ID) for all devices, QoS 1."""

OLD_BROKER: dict[str, Any] = {"tls": True, "keepalive": 1200, "clean_session": False}
"""awscrt's connection in the old tool: mutual TLS, keep-alive 1200 s, persistent session."""

DEVICE_ARGS = {
    "device_type": Arg(default="basic", help="cr1000x | basic (the old tool's default: basic)"),
    "max_cycles": Arg(default=0, help="Sends per device; 0 = until stopped (the old default)."),
    "max_sites": Arg(default=0, help="Use only the first N sites; 0 = no limit."),
    "sleep_time": Arg(default=60.0),
}
DEVICE_OPTIONS = (
    "sleep_time",
    "max_cycles",
    "max_sites",
    "swarm_name",
    "delay_start",
    "device_type",
    "no_send_probability",
    "prog_name",
    "strict_json",
)

METRICS_OPTIONS = ("metrics_port", "pushgateway", "metrics_interval")
"""New here (the old tool had no metrics): spelled as in the flat form."""

IOT_CORE_ARGS = {
    "host": Arg(
        flags=("--endpoint",),
        default=None,
        help="IoT Core endpoint (default: $IOT_SWARM_MQTT_ENDPOINT, else the config file's "
        "iot_core endpoint)",
    ),
    "cert_file": Arg(
        flags=("--cert-path",),
        help="device certificate (default: $IOT_SWARM_MQTT_CERT_PATH, else iot_core cert_path)",
    ),
    "key_file": Arg(
        flags=("--key-path",),
        help="its private key (default: $IOT_SWARM_MQTT_KEY_PATH, else iot_core key_path)",
    ),
    "ca_file": Arg(
        flags=("--ca-cert-path",),
        help="root CA (default: $IOT_SWARM_MQTT_CA_CERT_PATH, else iot_core ca_cert_path)",
    ),
    "port": Arg(
        default=None,
        help="broker port (default: the config file's iot_core port, else 443 with ALPN "
        f"{AWS_ALPN}, as the old tool)",
    ),
}
_IOT_CORE_ENV = {
    "host": ("IOT_SWARM_MQTT_ENDPOINT", "endpoint"),
    "cert_file": ("IOT_SWARM_MQTT_CERT_PATH", "cert_path"),
    "key_file": ("IOT_SWARM_MQTT_KEY_PATH", "key_path"),
    "ca_file": ("IOT_SWARM_MQTT_CA_CERT_PATH", "ca_cert_path"),
}


def is_old_command(argv: Sequence[str]) -> bool:
    """True when the first word after the top-level options is one of the old commands."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 if "=" in argv[i] or argv[i] not in TOP_OPTIONS else 2
    return i < len(argv) and argv[i] in COMMANDS


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


SQLITE_FILE = "--file .demo/cosmos.sqlite"
"""The demo's sample database: the examples of the SQLite commands run as printed on it."""
CSV_FILE = "--file iotswarm_tests/data/level1_soilmet_30min_alic1_sample.csv"
"""A CSV export in the old tool's format, shipped with the checkout."""


def _sub(subparsers: Any, name: str, help: str, *examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help,
        description=help,
        epilog=help_text.epilog(examples, help_text.SWARM_EXITS),
        formatter_class=_Formatter,
    )


def _table(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(
        parser,
        SwarmOptions,
        only=("table",),
        args={
            "table": Arg(
                flags=("TABLE",), default=None, help=f"COSMOS table ({', '.join(OLD_TABLES)})"
            )
        },
    )


def _sites(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site",
        action="append",
        default=[],
        help="a site to use (repeat for more) (default: every site of the table)",
    )


def _list_sites(subparsers: Any, example: str, with_table: bool) -> None:
    p = _sub(subparsers, "list-sites", "Print the sites of the source (a Python list).", example)
    if with_table:
        _table(p)
    options.add_arguments(p, SwarmOptions, only=("max_sites",), args=DEVICE_ARGS)


def _mqtt(subparsers: Any, example: str, *, with_table: bool, resume: bool) -> None:
    p = _sub(subparsers, "mqtt", "Run the swarm: one device per site, over MQTT.", example)
    if with_table:
        _table(p)
    options.add_arguments(
        p,
        SwarmOptions,
        only=("client_id",),
        args={"client_id": Arg(flags=("CLIENT_ID",), help="client ID of the connection")},
    )
    wanted = [*DEVICE_OPTIONS, "mqtt_prefix", "mqtt_suffix", "dry", "verify"]
    wanted += [*METRICS_OPTIONS, *CONTROL_OPTIONS]
    options.add_arguments(
        p, SwarmOptions, only=[*wanted, *(["resume_session"] if resume else [])], args=DEVICE_ARGS
    )
    options.add_arguments(p, BrokerOptions, only=tuple(IOT_CORE_ARGS), args=IOT_CORE_ARGS)


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="iot-swarm",
        description="NERC-CEH/iot-swarm's commands (the flat options: iot-swarm --help).",
        epilog=help_text.epilog(
            [
                f"iot-swarm looping-sqlite3 {SQLITE_FILE} mqtt LEVEL_1_SOILMET_30MIN my-client "
                "--dry --max-cycles 2 --sleep-time 1",
                "iot-swarm cosmos --dsn HOST/COSMOS --user U mqtt LEVEL_1_SOILMET_30MIN my-client "
                "--endpoint xxxx-ats.iot.eu-west-2.amazonaws.com --cert-path device.pem.crt "
                "--key-path private.pem.key --ca-cert-path AmazonRootCA1.pem",
            ],
            help_text.SWARM_EXITS,
        ),
        formatter_class=_Formatter,
    )
    top.add_argument("--log-config", help="logging config file (fileConfig format)")
    top.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=os.environ.get("IOT_SWARM_LOG_LEVEL"),
        help="log level (default: $IOT_SWARM_LOG_LEVEL, else WARNING)",
    )
    json_logs.add_argument(top)
    top.add_argument(
        "--config",
        default=os.environ.get("IOT_SWARM_CONFIG"),
        help="config file with iot_core: {…} and oracle: {…} blocks (or the flat keys), read "
        "for what the options and environment leave out (default: $IOT_SWARM_CONFIG)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _sub(commands, "get-version", "Print the version.", "iot-swarm get-version")
    test_mqtt = _sub(
        commands,
        "test-mqtt",
        "Connect to the broker with the device's certificate (one real CONNECT).",
        "iot-swarm --config config.cfg test-mqtt my-client",
    )
    options.add_arguments(
        test_mqtt, SwarmOptions, only=("client_id",), args={"client_id": Arg(flags=("CLIENT_ID",))}
    )
    options.add_arguments(test_mqtt, BrokerOptions, only=tuple(IOT_CORE_ARGS), args=IOT_CORE_ARGS)

    cosmos = _sub(
        commands,
        "cosmos",
        "Use the COSMOS (Oracle) database as the source.",
        "iot-swarm cosmos --dsn HOST/COSMOS --user U list-sites LEVEL_1_SOILMET_30MIN",
    )
    _sites(cosmos)
    for name, env, help in (
        ("--dsn", "IOT_SWARM_COSMOS_DSN", "Oracle DSN"),
        ("--user", "IOT_SWARM_COSMOS_USER", "Oracle user"),
        ("--password", "IOT_SWARM_COSMOS_PASSWORD", "Oracle password (prompted when missing)"),
    ):
        cosmos.add_argument(name, help=f"{help} (default: ${env}, else the config file's oracle)")
    cosmos_commands = cosmos.add_subparsers(dest="action", required=True, metavar="ACTION")
    _list_sites(
        cosmos_commands,
        "iot-swarm cosmos --dsn HOST/COSMOS --user U list-sites LEVEL_1_SOILMET_30MIN",
        with_table=True,
    )
    _mqtt(
        cosmos_commands,
        "iot-swarm cosmos --dsn HOST/COSMOS --user U mqtt LEVEL_1_SOILMET_30MIN my-client "
        "--sleep-time 1800 --dry",
        with_table=True,
        resume=False,
    )

    for name, env, what, with_table in (
        ("looping-csv", "IOT_SWARM_CSV_DB", "a CSV export", False),
        ("looping-sqlite3", "IOT_SWARM_LOCAL_DB", "a SQLite database", True),
    ):
        file = SQLITE_FILE if with_table else CSV_FILE
        table = "LEVEL_1_SOILMET_30MIN " if with_table else ""
        group = _sub(
            commands,
            name,
            f"Loop through the rows of {what}, oldest first, each site from its start.",
            f"iot-swarm {name} {file} mqtt {table}my-client --dry --max-cycles 3 "
            "--sleep-time 1 --swarm-name trial",
        )
        _sites(group)
        group.add_argument("--file", default=os.environ.get(env), help=f"{what} (default: ${env})")
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        _list_sites(actions, f"iot-swarm {name} {file} list-sites {table}".strip(), with_table)
        _mqtt(
            actions,
            f"iot-swarm {name} {file} mqtt {table}my-client --dry --max-cycles 2 "
            "--sleep-time 1 --resume-session --swarm-name trial",
            with_table=with_table,
            resume=True,
        )

    session_group = _sub(
        commands, "sessions", "List, create or delete sessions.", "iot-swarm sessions ls"
    )
    options.add_arguments(session_group, SwarmOptions, only=("sessions_dir",))
    session_actions = session_group.add_subparsers(dest="action", required=True, metavar="ACTION")
    _sub(session_actions, "ls", "Print the session names (a Python list).", "iot-swarm sessions ls")
    for action, help in (("init", "Create an empty session."), ("rm", "Delete a session.")):
        p = _sub(session_actions, action, help, f"iot-swarm sessions {action} trial")
        p.add_argument("session_id", metavar="SESSION_ID", help="the session (swarm) name")
    _config_anywhere(commands)
    return top


def _config_anywhere(subparsers: Any) -> None:
    """``--config`` after a command or action too, as users write it (``iot-swarm looping-csv
    --config F …``). SUPPRESS as the default: a command that is not given it keeps the value
    the top level parsed (the option, or $IOT_SWARM_CONFIG)."""
    for command in subparsers.choices.values():
        command.add_argument("--config", default=argparse.SUPPRESS, help="as before the command")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _config_anywhere(action)


def run(argv: Sequence[str]) -> tuple[int, str]:
    """Run one old command: (exit status, text to print). Raises ``CommandError``."""
    args = parser().parse_args(argv)
    _configure_logging(args)
    from iotswarm_pipelines.swarm.launch import run_swarm
    from iotswarm_pipelines.swarm.mqtt.settings import BrokerError, MqttConfigError

    try:
        file_settings = _file_settings(args.config)
        if args.command == "get-version":
            return EXIT_OK, __version__
        if args.command == "sessions":
            return EXIT_OK, _sessions(args)
        if args.command == "test-mqtt":
            return _test_mqtt(args, file_settings)
        source, schema = _source(args, file_settings)
        if args.action == "list-sites":
            return EXIT_OK, str(_list(args, source, schema))
    except (SwarmConfigError, ConfigFileError, SourceError, BrokerError, MqttConfigError) as exc:
        raise CommandError(first_line(exc), EXIT_BAD_INPUT) from None
    return run_swarm(lambda: _assemble(args, file_settings, source, schema))


def _configure_logging(args: argparse.Namespace) -> None:
    if args.log_config:
        if not Path(args.log_config).is_file():
            raise CommandError(f"--log-config {args.log_config}: no such file", EXIT_BAD_INPUT)
        logging.config.fileConfig(args.log_config, disable_existing_loggers=False)
    if args.log_level:
        logging.getLogger().setLevel(args.log_level)
        print(f"Set log level to {args.log_level}.", file=sys.stderr)
    try:  # after the level: its handler takes the root's
        json_logs.configure(args.log_format)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_BAD_INPUT) from None


def _file_settings(path: str | None) -> dict[str, str]:
    from iotswarm_pipelines import file_options

    if not path:
        return {}
    return {key: s.value for key, s in read_settings(Path(path), file_options.KEYS).items()}


def _sessions(args: argparse.Namespace) -> str:
    """The old tool's outputs: a Python list for ``ls``, its sentences for ``rm``."""
    from iotswarm_pipelines.swarm import sessions

    if args.action == "ls":
        return str(sessions.list_sessions(args.sessions_dir))
    if args.action == "init":
        sessions.init_session(args.session_id, args.sessions_dir)
        return f'Session "{args.session_id}" created.'
    if sessions.remove_session(args.session_id, args.sessions_dir):
        return f'Session "{args.session_id}" deleted.'
    return f'Session "{args.session_id}" does not exist.'


def _broker_values(args: argparse.Namespace, file_settings: dict[str, str]) -> dict[str, Any]:
    """The IoT Core options: command line, else the old tool's variables, else the file."""
    values = {**OLD_BROKER}
    for name, (env, key) in _IOT_CORE_ENV.items():
        value = getattr(args, name, None) or os.environ.get(env) or file_settings.get(key)
        if value:
            values[name] = value
    port = args.port or file_settings.get("port")
    values["port"] = int(port) if port else 443
    if not port:
        values["alpn"] = [AWS_ALPN]
    missing = [IOT_CORE_ARGS[name].flags[0] for name in _IOT_CORE_ENV if name not in values]
    if missing and not getattr(args, "dry", False):
        raise SwarmConfigError(
            f"missing {', '.join(missing)}: give the options, the old IOT_SWARM_MQTT_* "
            "variables or an iot_core block in --config"
        )
    values.setdefault("host", "127.0.0.1")  # a dry run never connects
    return values


def _test_mqtt(args: argparse.Namespace, file_settings: dict[str, str]) -> tuple[int, str]:
    from iotswarm_pipelines.swarm.mqtt.settings import check_broker
    from iotswarm_pipelines.swarm.resources import MqttResource

    broker = MqttResource(**_broker_values(args, file_settings))
    settings = broker.settings()
    check_broker(settings, client_id=args.client_id)
    return EXIT_OK, f"connected to {settings.address} as {args.client_id}"


def _source(args: argparse.Namespace, file_settings: dict[str, str]) -> tuple[str, str | None]:
    """(the flat form's --source, the Oracle schema) for the chosen group."""
    if args.command == "cosmos":
        dsn = args.dsn or os.environ.get("IOT_SWARM_COSMOS_DSN") or file_settings.get("dsn")
        user = args.user or os.environ.get("IOT_SWARM_COSMOS_USER") or file_settings.get("user")
        password = (
            args.password
            or secret_files.take_from_environment("IOT_SWARM_COSMOS_PASSWORD")
            or file_settings.get("pass")
        )
        if not dsn or not user:
            raise SwarmConfigError(
                "cosmos needs --dsn and --user (or IOT_SWARM_COSMOS_DSN/USER, or an oracle "
                "block in --config)"
            )
        if not password:
            if not sys.stdin.isatty():
                raise SwarmConfigError(
                    "cosmos needs a password: --password, IOT_SWARM_COSMOS_PASSWORD or --config"
                )
            password = getpass.getpass("Password: ")
        return oracle_url(dsn, user, password), catalogue.SCHEMA
    if not args.file or not Path(args.file).is_file():
        raise SwarmConfigError(f"{args.command} needs --file naming an existing file")
    if args.command == "looping-sqlite3":
        return f"sqlite:///{Path(args.file).resolve()}", None
    return str(Path(args.file).resolve()), None


def _list(args: argparse.Namespace, source: str, schema: str | None) -> list[str]:
    from iotswarm_pipelines.cosmos.source import CosmosSource
    from iotswarm_pipelines.swarm.data import CsvRows

    limit = args.max_sites or None
    if args.command == "looping-csv":
        return CsvRows(source, catalogue.SOILMET_30MIN).sites()[:limit]
    table = catalogue.get_table(args.table)
    return CosmosSource(url=source, schema_name=schema).list_sites(table)[:limit]


def _assemble(
    args: argparse.Namespace, file_settings: dict[str, str], source: str, schema: str | None
) -> tuple[SwarmConfig, dict[str, Any], MqttResource]:
    run_values = {**OLD_DEFAULTS, **options.parsed_values(args, SwarmOptions)}
    run_values["mode"] = "latest" if args.command == "cosmos" else "loop"
    if args.site:
        run_values["sites"] = list(args.site)
    if not run_values.get("max_sites"):
        run_values.pop("max_sites", None)  # the old tool's 0: no limit
    from iotswarm_pipelines.swarm.launch import assemble

    return assemble(
        run_values,
        _broker_values(args, file_settings),
        source=source,
        log_level=args.log_level or "WARNING",
        schema_name=schema,
    )
