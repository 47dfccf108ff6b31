"""``live-cosmos CONFIG TABLE``: the old uploader's command line, running the live export asset.

The command materializes the same ``cosmos_live_export`` asset as Dagster's triggers, in this
process, on a temporary instance (or the one in ``--dagster-home``), so a cron job that called the
old tool gets the new behaviour without a Dagster deployment. Exit codes: 0 exported, 1 an
export failed, 2 bad arguments/config or the source cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import dagster as dg
import pydantic
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource
from tqdm import tqdm

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource, SourceError
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export.assets import (
    LiveExportConfig,
    cosmos_live_export,
    run_tags,
    summary_from_metadata,
)
from iotswarm_pipelines.export.config_file import ConfigFileError, LiveCosmosConfig, parse_config
from iotswarm_pipelines.export.pipeline import PROGRESS_LOGGER
from iotswarm_pipelines.export.stores import Destination, build_stores
from iotswarm_pipelines.export.summary_text import format_summary
from iotswarm_pipelines.labels import Trigger, trigger_tags

PROG = "live-cosmos"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line too, like every other bad input (no usage wall)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Export new COSMOS rows as CR1000X JSON payloads to S3 or a folder.",
    )
    parser.add_argument("config", help="config file: dsn='…', user='…', pass='…', bucket='…' …")
    parser.add_argument(
        "table",
        help="COSMOS table (LEVEL1_SOILMET_30MIN or the older LEVEL_1_SOILMET_30MIN) or 'all'",
    )
    parser.add_argument("--since", help="replay rows after this GMT time (ISO 8601)")
    parser.add_argument("--until", help="replay rows up to this GMT time (ISO 8601)")
    parser.add_argument("--dry-run", action="store_true", help="build payloads, store nothing")
    parser.add_argument(
        "--dagster-home",
        help="record the runs in this Dagster instance (default: a temporary one)",
    )
    return parser


def _tables(name: str) -> list[str]:
    if name.strip().lower() == "all":
        return list(catalogue.TABLE_NAMES)
    try:
        return [catalogue.get_table(name).name]
    except catalogue.UnknownTableError as exc:
        raise _UsageError(f"{exc} (or 'all')") from None


def _source(config: LiveCosmosConfig) -> CosmosSource:
    return CosmosSource(url=config.url, schema_name=config.schema_name)


def stores(config: LiveCosmosConfig) -> dict[str, Any]:
    """The config file's ``object_store`` and ``state`` (live-cosmos and reconciliation)."""
    return build_stores(
        Destination(
            s3=S3Resource(endpoint_url=config.endpoint_url),
            bucket=config.bucket,
            object_dir=config.object_dir,
            prefix=config.bucket_prefix,
            state_dir=config.state_dir,
            state_bucket=config.bucket,
            state_prefix=config.state_prefix,
        )
    )


def _resources(config: LiveCosmosConfig) -> dict[str, Any]:
    """The runs' resources. The source is handed over as a ready object rather than as
    config: a URL given as config (password and all) would be stored in the Dagster instance
    as the resource's default in the job snapshot."""
    return {"cosmos": dg.ResourceDefinition.hardcoded_resource(_source(config)), **stores(config)}


def _run_config(config: LiveCosmosConfig, args: argparse.Namespace) -> dict[str, Any]:
    op_config: dict[str, Any] = {"dry_run": args.dry_run}
    optional = {
        "sites": config.sites,
        "fallback_hours": config.fallback_hours,
        "batch_size": config.batch_size,
        "since": args.since,
        "until": args.until,
    }
    op_config.update({k: v for k, v in optional.items() if v is not None})
    LiveExportConfig(**op_config).check()  # a bad --since: fail before running
    return {
        "ops": {cosmos_live_export.op.name: {"config": op_config}},
        # The terminal gets the progress bar and the summary; the run's log stays in the instance.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }


class _ProgressBar(logging.Handler):
    """Turns the pipeline's progress records into a tqdm bar of rows (terminal only)."""

    def __init__(self, table: str) -> None:
        super().__init__(logging.DEBUG)
        self.bar = tqdm(desc=table, unit=" rows", disable=None, leave=False, file=sys.stderr)
        self.payloads = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.payloads += getattr(record, "payloads", 0)
        self.bar.update(getattr(record, "rows", 0))
        self.bar.set_postfix(payloads=self.payloads, refresh=False)


@contextlib.contextmanager
def _progress(table: str) -> Iterator[None]:
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = _ProgressBar(table)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.bar.close()


def _check_source(source: CosmosSource, config: LiveCosmosConfig, tables: list[str]) -> None:
    """Reach the database before any run, so an outage or an unknown site is one line, exit 2."""
    try:
        source.check(tables)
        for table in tables:
            site_rules.select(table, config.sites, source.list_sites(table))
    except SourceError:
        raise
    except (OSError, sa.exc.SQLAlchemyError) as exc:  # drivers that fail below SQLAlchemy
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"cannot reach the COSMOS source {config.safe_url}: {first}") from None


def _failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "DagsterExecution" in (error.cls_name or "")
            ):
                error = error.cause
            if error is not None:
                first = error.message.strip().splitlines()[0]
                return first.removeprefix(f"{error.cls_name}: ").split(f".{error.cls_name}: ")[-1]
    return "the export run failed; see the Dagster run log"


def _export(
    table: str, resources: dict[str, Any], run_config: dict[str, Any], instance: Any
) -> tuple[bool, str]:
    with _progress(table):
        result = dg.materialize(
            [cosmos_live_export],
            partition_key=table,
            resources=resources,
            run_config=run_config,
            instance=instance,
            tags={**run_tags(table), **trigger_tags(Trigger.CLI)},
            raise_on_error=False,
        )
    if not result.success:
        return False, f"{table}: export failed: {_failure(result)}"
    [event] = result.asset_materializations_for_node(cosmos_live_export.op.name)
    summary = summary_from_metadata(table, event.metadata)
    return True, format_summary(summary, resources["object_store"].describe())


def run(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["reconcile"]:
        from iotswarm_pipelines.export import reconcile_cli  # it builds on this module

        return reconcile_cli.run(argv[1:])
    args = _parser().parse_args(argv)
    try:
        config = parse_config(args.config)
        tables = _tables(args.table)
        resources = _resources(config)
        run_config = _run_config(config, args)
        _check_source(_source(config), config, tables)
    except pydantic.ValidationError as exc:
        print(
            f"{PROG}: error: {exc.errors()[0]['msg'].removeprefix('Value error, ')}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (ConfigFileError, _UsageError, SourceError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = EXIT_OK
    with contextlib.ExitStack() as stack:
        # Entered, so the instance is the current one while its runs load their definitions.
        instance = (
            stack.enter_context(dg.DagsterInstance.from_config(args.dagster_home))
            if args.dagster_home
            else None
        )
        for table in tables:
            ok, text = _export(table, resources, run_config, instance)
            print(text, file=sys.stdout if ok else sys.stderr)
            code = code if ok else EXIT_FAILED
    return code


def main() -> None:
    sys.exit(run())
