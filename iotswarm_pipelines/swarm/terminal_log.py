"""``iot-swarm``'s Dagster logger: one plain line per record on the terminal.

The command states every failure's cause itself, in one line, and prints the report; Dagster's
error records (a step or the run failed, with the stack of a ``Failure`` the report step raises
on purpose; a step not run because a shard died) would repeat it as dozens of lines of stack
trace, so they are left to the run's event log, where the UI shows them. The swarm's steps log
nothing at error level (they raise). Warnings and messages the steps log stay, one line each
(``iot-swarm: warning: run_shard[shard_0]: …``).
"""

from __future__ import annotations

import logging
import sys

import dagster as dg

from iotswarm_pipelines import json_logs
from iotswarm_pipelines.errors import first_line

META = "dagster_meta"  # where Dagster's log manager puts a record's step and event


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, META, None) or {}
        message = str(meta.get("orig_message") or record.getMessage())
        first = first_line(message)
        step = f"{meta['step_key']}: " if meta.get("step_key") else ""
        return f"iot-swarm: {record.levelname.lower()}: {step}{first}"


@dg.logger(
    {"log_level": dg.Field(str, is_required=False, default_value="WARNING")},
    description="iot-swarm's terminal: one line per record, errors left to the command.",
)
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("iot-swarm", level=init_context.logger_config["log_level"].upper())
    if json_logs.is_json():  # --log-format json: the same records as JSON lines
        handler = json_logs.json_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
    handler.addFilter(lambda record: record.levelno < logging.ERROR)
    logger.addHandler(handler)
    return logger
