"""JSON log lines on request, for fluent-bit and the like: ``--log-format json`` or
``IOTSWARM_LOG_FORMAT=json``.

One object a line on stderr: ``time`` (UTC, ISO 8601), ``level``, ``message``, and where known
``run_id``, ``job``, ``step``, ``table``, ``swarm``, ``shard``, ``logger`` and a one-line
``error`` (never a stack trace). Every message is redacted (``redact``): no URL password or
credential variable's value reaches a line.

Two places log: the commands' own Python loggers (``configure``) and the Dagster runs (the
``console`` logger every job here uses, ``run_loggers.LOGGERS``). Both read the same variable, and
``configure`` sets it, so the shard processes a command starts log JSON too. The format is
chosen when a run starts, not when the code is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

from iotswarm_pipelines.redact import first_line, redact

LOG_FORMAT_ENV = "IOTSWARM_LOG_FORMAT"
FORMATS = ("text", "json")
TABLE_TAGS = ("iotswarm/table", "dagster/partition/table")
SWARM_TAG = "iotswarm/swarm"
SHARD_STEP = re.compile(r"\[shard_(\d+)\]$")
CONTEXT_FIELDS = ("table", "swarm", "shard", "site")
"""Attributes a caller may pass as ``extra=`` (or set on ``context``) to label its lines."""

context: dict[str, Any] = {}
"""Fields every line of this process carries (a command sets its table or swarm here)."""


def chosen(explicit: str | None = None) -> str:
    """The format: the flag's, else the variable's, else text; a wrong value is one line."""
    value = (explicit or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={value!r}: the log format is text or json")
    return value


def is_json() -> bool:
    return chosen() == "json"


def add_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help=f"text, or json: one object a line on stderr (default: ${LOG_FORMAT_ENV}, else text)",
    )


class JsonFormatter(logging.Formatter):
    """A record as one JSON object, its Dagster metadata (run, job, step, tags) flattened."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if meta:
            line.update(_dagster_fields(meta))
        line.update({key: value for key, value in context.items() if value is not None})
        line.update({key: getattr(record, key) for key in CONTEXT_FIELDS if hasattr(record, key)})
        message = meta.get("orig_message") if meta else None
        line["message"] = redact(message if message is not None else record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["error"] = f"{type(error).__name__}: {first_line(str(error))}"
        return json.dumps(line, default=str)


def _dagster_fields(meta: dict[str, Any]) -> dict[str, Any]:
    tags = meta.get("job_tags") or {}
    fields: dict[str, Any] = {
        "run_id": meta.get("run_id"),
        "job": meta.get("job_name"),
        "step": meta.get("step_key"),
        "table": next((tags[t] for t in TABLE_TAGS if tags.get(t)), None),
        "swarm": tags.get(SWARM_TAG),
    }
    event = meta.get("dagster_event")
    if event is not None:
        fields["event"] = getattr(event, "event_type_value", None)
    if shard := SHARD_STEP.search(meta.get("step_key") or ""):
        fields["shard"] = int(shard[1])
    return {key: value for key, value in fields.items() if value is not None}


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def configure(explicit: str | None = None, **fields: Any) -> str:
    """A command's switch: with json, its Python logs become JSON lines on stderr, and the
    variable is set so the runs and processes it starts log JSON too. Returns the format.

    The handler takes the root logger's level as it is now (WARNING unless the command set
    one): loggers that keep a lower level of their own for a terminal's progress bar stay out.
    """
    value = chosen(explicit)
    context.update(fields)
    if value == "json":
        os.environ[LOG_FORMAT_ENV] = "json"
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = json_handler()
        handler.setLevel(root.getEffectiveLevel())
        root.addHandler(handler)
    return value


def console_level(text_level: str) -> str:
    """A command's run-log level: its own in text (the terminal shows a bar), INFO in JSON, where
    the run's log is what the log shipper is for."""
    return "INFO" if is_json() else text_level
