"""How every command (``live-cosmos``, ``iot-swarm``, ``cosmos-sample``) parses and exits.

Standard library only: a command's ``--help`` and its bad arguments are answered by the
parser before Dagster, pandas or an engine is imported (iotswarm_tests/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import signal
from typing import Any, NoReturn

from iotswarm_pipelines.terminal_text import one_line

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM  # as a shell reports them


class UsageError(Exception):
    """Arguments that parse but do not fit together: one line, exit 2."""


class CommandError(RuntimeError):
    """The command cannot go on (bad input) or its run failed; the message is one line."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Parser(argparse.ArgumentParser):
    """Bad arguments are one line too, like every other bad input (no usage wall).

    ``error_prog`` names the command in that line when it is not the parser's ``prog``
    (``live-cosmos send-live-data`` reports as ``live-cosmos``, as it always has).
    """

    def __init__(self, *args: Any, error_prog: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_prog = error_prog or self.prog

    def error(self, message: str) -> NoReturn:
        name = self.error_prog
        self.exit(EXIT_BAD_INPUT, f"{name}: error: {one_line(message)} (see {name} --help)\n")
