"""The Dagster runs' ``console`` logger: Dagster's own, or JSON lines (``json_logs``) on request.

Apart from ``json_logs`` so that the commands can offer ``--log-format`` without importing
Dagster before a run starts.
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster._utils.log import create_console_logger

from iotswarm_pipelines.json_logs import is_json, json_handler


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster's console logger, or JSON lines when IOTSWARM_LOG_FORMAT=json.",
)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The same config as Dagster's default ``console`` logger, so run configs stay valid."""
    name = init_context.logger_config["name"]
    level = init_context.logger_config["log_level"].upper()
    if not is_json():
        return create_console_logger(name=name, level=level)
    logger = logging.Logger(name, level=level)
    logger.addHandler(json_handler())
    return logger


LOGGERS = {"console": console_logger}
"""Every job's loggers (``logger_defs=`` or ``Definitions(loggers=...)``)."""
