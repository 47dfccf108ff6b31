"""``iot-swarm``: run the swarm job from a terminal, with the old swarm's options and more.

The same job as in the UI (``swarm_job``), built and run by ``swarm.launch``: one shard runs in
this process, more shards one process each. Every check that can fail runs before a device
starts and prints one line (exit 2). The exit status is 1 when messages were lost at QoS 1 or
the broker could not be used during the run, 130 or 143 when ^C or SIGTERM stopped the devices
early (the report is still made and saved, and the run is recorded as canceled).

Only the command lines are imported at first (this module and ``old_commands``); Dagster and the
engine load once a run starts, so ``--help`` and bad arguments answer at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from iotswarm_pipelines import help_text, json_logs
from iotswarm_pipelines.command_line import EXIT_SIGINT, CommandError, Parser
from iotswarm_pipelines.secret_files import SWARM_PASSWORD_ENV
from iotswarm_pipelines.swarm import old_commands, options
from iotswarm_pipelines.swarm.options import BrokerOptions, SwarmOptions

if TYPE_CHECKING:
    from iotswarm_pipelines.swarm.config import SwarmConfig
    from iotswarm_pipelines.swarm.resources import MqttResource


# Where iot-swarm differs from the job's options: --source also takes a database URL, and
# progress is logged more often in a terminal.
CLI_ARGS = {
    "source": options.Arg(
        default=None,
        help="SQLAlchemy URL of a COSMOS database or the path of a CSV export (default: "
        "$IOTSWARM_SOURCE_URL, for a URL that holds a password, else the sample database "
        "under IOTSWARM_DATA_DIR)",
    ),
    "progress_interval": options.Arg(default=2.0),
}


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="iot-swarm",
        allow_abbrev=False,
        description="Simulate COSMOS-UK dataloggers publishing over MQTT and report delivery. "
        "The old tool's commands (iot-swarm cosmos|looping-csv|looping-sqlite3|sessions|"
        "get-version|test-mqtt --help) run the same job.",
        epilog=help_text.epilog(
            [
                "iot-swarm --dry --max-sites 5",
                "iot-swarm --devices 50 --shards 2 --mode loop --sleep-time 0.1 --max-cycles 3 "
                "--verify",
                # devices the team's mqtt-control can drive (docs/control-api.md)
                "iot-swarm --max-sites 2 --mode loop --sleep-time 1 --max-cycles 5 "
                "--group-id cs/v2 --reboot-seconds 5",
            ],
            help_text.SWARM_EXITS,
        ),
        formatter_class=help_text.Formatter,
    )
    options.add_arguments(p, SwarmOptions, args=CLI_ARGS)
    options.add_arguments(p, BrokerOptions)
    options.group(p, options.MQTT).add_argument(
        "--password-file", help=f"file holding the password (or set {SWARM_PASSWORD_ENV})"
    )
    p.add_argument(
        "--log-level", default="WARNING", help="Dagster log level on stderr (default: WARNING)"
    )
    json_logs.add_argument(p)
    return p


def build(args: argparse.Namespace) -> tuple[SwarmConfig, dict[str, Any], MqttResource]:
    """The job's config, run config and broker from the flat form's arguments."""
    from iotswarm_pipelines.swarm.launch import assemble

    json_logs.configure(args.log_format)
    return assemble(
        options.parsed_values(args, SwarmOptions),
        options.parsed_values(args, BrokerOptions),
        source=args.source,
        password_file=args.password_file,
        log_level=args.log_level,
    )


def run(argv: Sequence[str]) -> tuple[int, str]:
    """Run a swarm from command-line arguments: (exit status, printed report).

    Raises ``CommandError`` when nothing could run or the run failed.
    """
    args = _parser().parse_args(argv)
    from iotswarm_pipelines.swarm.launch import run_swarm

    return run_swarm(lambda: build(args))


def _sigterm_as_sigint(_signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes the path ^C takes (whatever handles SIGINT now): a clean, reported stop."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = old_commands.run if old_commands.is_old_command(argv) else run
    try:
        code, text = command(argv)
    except CommandError as exc:
        print(f"iot-swarm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("iot-swarm: error: interrupted before the devices started", file=sys.stderr)
        return EXIT_SIGINT
    try:
        print(text, flush=True)
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """stdout's reader left early (``iot-swarm … | head``): end quietly, as a command that
    SIGPIPE ended would, instead of a traceback. stdout then points at /dev/null, so the
    interpreter's last flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
