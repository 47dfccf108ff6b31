"""What the ``live-cosmos`` commands (the export, ``send-live-data``, ``reconcile``) and the demo
share once their arguments are parsed: the config file's source and stores, the check that
reaches the source first, the bad-input line, and the terminal's progress bar.

The command modules import this only when a run starts, so their ``--help`` and bad arguments
answer before Dagster and the engines load.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pydantic
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource
from tqdm import tqdm

from iotswarm_pipelines.command_line import UsageError
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.export import scope
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export.config_file import ConfigFileError, LiveCosmosConfig
from iotswarm_pipelines.export.pipeline import PROGRESS_LOGGER
from iotswarm_pipelines.export.stores import Destination, build_stores, place
from iotswarm_pipelines.secret_files import aws_credentials

BAD_INPUT = (ConfigFileError, UsageError, SourceError, ValueError)
"""What a command reports in one line with exit 2 (pydantic's errors are ValueErrors)."""


def bad_input_line(exc: Exception) -> str:
    """The line for ``BAD_INPUT``: pydantic's first complaint without its prefix, else the
    error's text."""
    if isinstance(exc, pydantic.ValidationError):
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


def source(config: LiveCosmosConfig) -> CosmosSource:
    return CosmosSource(url=config.url, schema_name=config.schema_name)


def check_source(
    source: CosmosSource,
    config: LiveCosmosConfig,
    tables: list[catalogue.Table],
    sites: list[str] | None,
    *,
    require_rows: bool = False,
) -> None:
    """Reach the database before any run, so an outage or an unknown site is one line, exit 2."""
    try:
        source.check(tables)
        for table in tables:
            site_rules.select(table, sites, source.list_sites(table), require_rows=require_rows)
    except SourceError:
        raise
    except (OSError, sa.exc.SQLAlchemyError) as exc:  # drivers that fail below SQLAlchemy
        raise SourceError(
            f"cannot reach the COSMOS source {config.safe_url}: {first_line(exc)}"
        ) from None


def _s3(config: LiveCosmosConfig) -> S3Resource:
    """The bucket's client, with the keys the entry point took out of the environment."""
    keys = aws_credentials()
    return S3Resource(
        endpoint_url=config.endpoint_url,
        aws_access_key_id=keys.get("aws_access_key_id"),
        aws_secret_access_key=keys.get("aws_secret_access_key"),
        aws_session_token=keys.get("aws_session_token"),
    )


def destination(config: LiveCosmosConfig) -> Destination:
    return Destination(
        s3=_s3(config),
        bucket=config.bucket,
        object_dir=config.object_dir,
        prefix=config.bucket_prefix,
        state_dir=config.state_dir,
        state_bucket=config.bucket,
        state_prefix=config.state_prefix,
    )


def stores(config: LiveCosmosConfig) -> dict[str, Any]:
    """The config file's ``object_store`` and ``state`` (live-cosmos and reconciliation)."""
    return build_stores(destination(config))


def health_scope(config: LiveCosmosConfig) -> dict[str, str]:
    """The runs' destination and whether it is the deployment's (``scope``): a one-off run
    elsewhere is recorded as such and never judged as the deployment's health."""
    from iotswarm_pipelines.resources import deployment_place  # the deployment's environment

    return scope.scope_tags(place(destination(config)), deployment_place())


def resources(config: LiveCosmosConfig) -> dict[str, Any]:
    """The runs' resources. The source is handed over as a ready object rather than as
    config: a URL given as config (password and all) would be stored in the Dagster instance
    as the resource's default in the job snapshot."""
    return {"cosmos": dg.ResourceDefinition.hardcoded_resource(source(config)), **stores(config)}


class _ProgressBar(logging.Handler):
    """Turns the pipeline's progress records into a tqdm bar of rows (terminal only).

    The run first announces about how many rows it will read, which gives the bar its total and
    time left; it is an upper bound (outages leave gaps), so the bar is completed at the end.
    """

    def __init__(self, table: catalogue.Table, prog: str) -> None:
        super().__init__(logging.DEBUG)
        self.bar = tqdm(desc=table.name, unit=" rows", disable=None, leave=False, file=sys.stderr)
        self.payloads = 0
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        notice = getattr(record, "notice", None)
        if notice is not None:  # e.g. waiting for the table's lock: the terminal shows no log
            tqdm.write(f"{self.prog}: {notice}", file=sys.stderr)
            return
        expected = getattr(record, "expected_rows", None)
        if expected is not None:
            self.bar.total = expected
            self.bar.refresh()
            return
        self.payloads += getattr(record, "payloads", 0)
        self.bar.update(getattr(record, "rows", 0))
        self.bar.set_postfix(payloads=self.payloads, refresh=False)


@contextlib.contextmanager
def progress_bar(table: catalogue.Table, prog: str = "live-cosmos") -> Iterator[None]:
    """A progress bar of the rows one table's export reads, on stderr when it is a terminal;
    the run's notices (a lock being waited for) print as ``prog: notice``."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = _ProgressBar(table, prog)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.bar.close()
