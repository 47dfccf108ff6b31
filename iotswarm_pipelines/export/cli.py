"""``live-cosmos``: the old uploaders' command lines, running the live export asset.

Two spellings, the same runs: ``live-cosmos CONFIG TABLE`` (the first uploader's) and
``live-cosmos send-live-data CONFIG --table T …`` (NERC-CEH/iot-swarm's, with repeated options
and one batch size per table). Other subcommands register in ``SUBCOMMANDS``; a first argument
that is not one of them is the flat form's CONFIG.

Each table materializes the same ``cosmos_live_export`` asset as Dagster's triggers, in this
process, as runs of ``cosmos_live_export_job`` recorded in the instance of ``--dagster-home`` or
``DAGSTER_HOME`` (so the UI lists them), or a temporary one when neither is set; a cron job that
called the old tool gets the new behaviour without a Dagster deployment. Exit codes: 0 exported,
1 an export failed, 2 bad arguments/config or the source cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import dagster as dg
import pydantic
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource
from tqdm import tqdm

from iotswarm_pipelines import help_text, json_logs, settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.export import pipeline, scope
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export.assets import (
    LiveExportConfig,
    cosmos_live_export,
    execute_live_export,
    run_tags,
    summary_from_metadata,
)
from iotswarm_pipelines.export.config_file import ConfigFileError, LiveCosmosConfig, parse_config
from iotswarm_pipelines.export.pipeline import PROGRESS_LOGGER
from iotswarm_pipelines.export.stores import Destination, build_stores, place
from iotswarm_pipelines.export.summary_text import format_summary
from iotswarm_pipelines.labels import Trigger, trigger_tags
from iotswarm_pipelines.secret_files import aws_credentials
from iotswarm_pipelines.terminal_text import one_line

PROG = "live-cosmos"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line too, like every other bad input (no usage wall)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {one_line(message)} (see {PROG} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line (unless the help says it), examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default" in text
            or action.default in (None, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


CONFIG_HELP = (
    "config file, flat (dsn='…' user='…' pass='…' bucket='…') or nested "
    '(oracle: { dsn: "…" user: "…" password: "…" } aws: { bucket: "…" bucket_prefix: "…" })'
)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dagster-home",
        help="record the runs in this Dagster instance (default: $DAGSTER_HOME if set, else a "
        "temporary one)",
    )
    parser.add_argument(
        "--prog-name",
        help="prog_name in every payload (default: the config file's, else CPU:iotswarm.CR1X); "
        "the old tool's spelling is CPU:iotswarm-<its version>.CR1X",
    )
    parser.add_argument(
        "--strict-json",
        action="store_true",
        default=None,
        help="write NaN and +-Infinity as null instead of the old tool's NaN/Infinity "
        "(default: the config file's strict_json, else off)",
    )
    json_logs.add_argument(parser)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Export new COSMOS rows as CR1000X JSON payloads to S3 or a folder.\n"
        f"Also: {PROG} send-live-data CONFIG --table T ... (the iot-swarm uploader's form), "
        f"{PROG} reconcile --help.",
        epilog=help_text.epilog(
            [
                f"{PROG} livecosmos.cfg LEVEL1_SOILMET_30MIN",
                f'{PROG} livecosmos.cfg all --since "$(date -u -d yesterday +%F)T00:00" --dry-run',
            ],
            help_text.EXPORT_EXITS,
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument(
        "table",
        help="COSMOS table (LEVEL1_SOILMET_30MIN or the older LEVEL_1_SOILMET_30MIN) or 'all' "
        f"({', '.join(catalogue.TABLE_NAMES)})",
    )
    parser.add_argument(
        "--since",
        help="replay rows after this GMT time (ISO 8601) (default: none, from each watermark)",
    )
    parser.add_argument(
        "--until", help="replay rows up to this GMT time (ISO 8601) (default: none, the newest row)"
    )
    parser.add_argument("--dry-run", action="store_true", help="build payloads, store nothing")
    _common_options(parser)
    return parser


OLD_TOOL_TABLES = (
    "LEVEL1_NMDB_1HOUR",
    "LEVEL1_PRECIP_1MIN",
    "LEVEL1_PRECIP_RAINE_1MIN",
    "LEVEL1_SOILMET_30MIN",
)
"""``send-live-data --table all``: the old tool's four tables, in its order (batch sizes given
one per table follow this order)."""


def _send_live_data_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} send-live-data",
        description="Send new rows of one or more tables (NERC-CEH/iot-swarm's command line).",
        epilog=help_text.epilog(
            [
                f"{PROG} send-live-data livecosmos.cfg --table LEVEL_1_SOILMET_30MIN --table "
                "LEVEL_1_PRECIP_1MIN --batch-size 1 --batch-size 60 --site ALIC1 --site BALRD --dry"
            ],
            help_text.EXPORT_EXITS,
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument(
        "--table",
        action="append",
        required=True,
        help="table to send (repeat for more; either spelling), or 'all' for "
        f"{', '.join(OLD_TOOL_TABLES)}",
    )
    parser.add_argument(
        "--site",
        action="append",
        help="site to send (repeat for more) (default: the config file's sites, else all sites "
        "with rows in the table)",
    )
    parser.add_argument(
        "--fallback-hours",
        type=float,
        help="hours back to start a site the state has never seen (default: the config "
        f"file's, else {pipeline.DEFAULT_FALLBACK_HOURS:g})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        action="append",
        help="rows per payload: one for all tables, or one per --table in the same order "
        "(default: the config file's, else 1)",
    )
    parser.add_argument("--dry", action="store_true", help="build payloads, store nothing")
    _common_options(parser)
    return parser


@dataclass(frozen=True)
class _Request:
    """What one invocation asks for, whichever command line said it."""

    config: str
    tables: list[str]
    batch_sizes: dict[str, int | None]
    sites: list[str] | None
    fallback_hours: float | None
    since: str | None
    until: str | None
    dry_run: bool
    dagster_home: str | None
    prog_name: str | None
    strict_json: bool | None


def _tables(name: str) -> list[str]:
    if name.strip().lower() == "all":
        return list(catalogue.TABLE_NAMES)
    try:
        return [catalogue.get_table(name).name]
    except catalogue.UnknownTableError as exc:
        raise _UsageError(f"{exc} (or 'all')") from None


def _shared(args: argparse.Namespace) -> dict[str, Any]:
    """What both command lines spell alike."""
    json_logs.configure(args.log_format)
    keys = ("config", "dagster_home", "prog_name", "strict_json")
    return {key: getattr(args, key) for key in keys}


def _flat_request(args: argparse.Namespace) -> _Request:
    tables = _tables(args.table)
    return _Request(
        tables=tables,
        batch_sizes=dict.fromkeys(tables),
        sites=None,
        fallback_hours=None,
        since=args.since,
        until=args.until,
        dry_run=args.dry_run,
        **_shared(args),
    )


def _send_live_data_request(args: argparse.Namespace) -> _Request:
    """The old tool's rules: ``all`` means its four tables; batch sizes are one or one per table."""
    tables: list[str] = []
    for name in args.table:
        chosen = list(OLD_TOOL_TABLES) if name.strip().lower() == "all" else _tables(name)
        tables += [t for t in chosen if t not in tables]
    sizes = args.batch_size or []
    if len(sizes) > 1 and len(sizes) != len(tables):
        raise _UsageError(
            f"{len(sizes)} --batch-size values for {len(tables)} tables; give one for all "
            "tables or one per --table, in the same order"
        )
    if any(size < 1 for size in sizes):
        raise _UsageError("--batch-size must be 1 or more rows per payload")
    per_table = sizes if len(sizes) > 1 else [sizes[0] if sizes else None] * len(tables)
    return _Request(
        tables=tables,
        batch_sizes=dict(zip(tables, per_table, strict=True)),
        sites=args.site,
        fallback_hours=args.fallback_hours,
        since=None,
        until=None,
        dry_run=args.dry,
        **_shared(args),
    )


def _source(config: LiveCosmosConfig) -> CosmosSource:
    return CosmosSource(url=config.url, schema_name=config.schema_name)


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


def _resources(config: LiveCosmosConfig) -> dict[str, Any]:
    """The runs' resources. The source is handed over as a ready object rather than as
    config: a URL given as config (password and all) would be stored in the Dagster instance
    as the resource's default in the job snapshot."""
    return {"cosmos": dg.ResourceDefinition.hardcoded_resource(_source(config)), **stores(config)}


def _run_config(config: LiveCosmosConfig, request: _Request, table: str) -> dict[str, Any]:
    """The command line's values over the config file's; what neither says keeps its default."""

    def first(*values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    op_config: dict[str, Any] = {"dry_run": request.dry_run}
    optional = {
        "sites": first(request.sites, config.sites),
        "fallback_hours": first(request.fallback_hours, config.fallback_hours),
        "batch_size": first(request.batch_sizes[table], config.batch_size),
        "since": request.since,
        "until": request.until,
        "prog_name": first(request.prog_name, config.prog_name),
        "strict_json": first(request.strict_json, config.strict_json),
        "pushgateway": config.pushgateway,
    }
    op_config.update({k: v for k, v in optional.items() if v is not None})
    LiveExportConfig(**op_config).check()  # a bad --since: fail before running
    return {
        "ops": {cosmos_live_export.op.name: {"config": op_config}},
        # The terminal gets the progress bar and the summary; the run's log stays in the instance
        # (and goes to stderr as JSON lines with --log-format json).
        "loggers": {"console": {"config": {"log_level": json_logs.console_level("CRITICAL")}}},
    }


class _ProgressBar(logging.Handler):
    """Turns the pipeline's progress records into a tqdm bar of rows (terminal only).

    The run first announces about how many rows it will read, which gives the bar its total and
    time left; it is an upper bound (outages leave gaps), so the bar is completed at the end.
    """

    def __init__(self, table: str) -> None:
        super().__init__(logging.DEBUG)
        self.bar = tqdm(desc=table, unit=" rows", disable=None, leave=False, file=sys.stderr)
        self.payloads = 0

    def emit(self, record: logging.LogRecord) -> None:
        notice = getattr(record, "notice", None)
        if notice is not None:  # e.g. waiting for the table's lock: the terminal shows no log
            tqdm.write(f"{PROG}: {notice}", file=sys.stderr)
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
def progress_bar(table: str) -> Iterator[None]:
    """A progress bar of the rows one table's export reads, on stderr when it is a terminal."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = _ProgressBar(table)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.bar.close()


def _check_source(
    source: CosmosSource,
    config: LiveCosmosConfig,
    tables: list[str],
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


def _failure(result: dg.ExecuteInProcessResult) -> str:
    from iotswarm_pipelines.export.export_runs import step_failure_cause

    cause = step_failure_cause(result.all_events)
    return cause or "the export run failed; see the Dagster run log"


def _export(
    table: str,
    resources: dict[str, Any],
    run_config: dict[str, Any],
    instance: Any,
    scope_tags: dict[str, str],
) -> tuple[bool, str]:
    with progress_bar(table):
        tags = {**run_tags(table), **trigger_tags(Trigger.CLI), **scope_tags}
        result = execute_live_export(table, resources, run_config, instance, tags)
    if not result.success:
        return False, f"{table}: export failed: {_failure(result)}"
    [event] = result.asset_materializations_for_node(cosmos_live_export.op.name)
    summary = summary_from_metadata(table, event.metadata)
    return True, format_summary(summary, resources["object_store"].build().describe())


def _flat(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    return _guarded(lambda: _flat_request(args))


def _send_live_data(argv: Sequence[str]) -> int:
    args = _send_live_data_parser().parse_args(argv)
    return _guarded(lambda: _send_live_data_request(args))


def _reconcile(argv: Sequence[str]) -> int:
    from iotswarm_pipelines.export import reconcile_cli  # it builds on this module

    return reconcile_cli.run(argv)


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "send-live-data": _send_live_data,
    "reconcile": _reconcile,
}
"""``live-cosmos NAME ...`` -> its handler (the rest of the arguments in, an exit code out)."""


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    handler = SUBCOMMANDS.get(argv[0]) if argv else None
    return handler(argv[1:]) if handler else _flat(argv)


def _guarded(request_of: Callable[[], _Request]) -> int:
    """Check everything (one line and exit 2 if wrong), then export each table in turn."""
    try:
        request = request_of()
        config = parse_config(request.config)
        tables = request.tables
        resources = _resources(config)
        scope_tags = health_scope(config)
        run_configs = {table: _run_config(config, request, table) for table in tables}
        hours = config.fallback_hours if request.fallback_hours is None else request.fallback_hours
        if warning := pipeline.fallback_warning(hours):
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        sites = request.sites if request.sites is not None else config.sites
        _check_source(_source(config), config, tables, sites)
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
        home = settings.dagster_home(request.dagster_home)
        instance = stack.enter_context(dg.DagsterInstance.from_config(home)) if home else None
        for table in tables:
            ok, text = _export(table, resources, run_configs[table], instance, scope_tags)
            print(text, file=sys.stdout if ok else sys.stderr)
            code = code if ok else EXIT_FAILED
    return code


def main() -> None:
    sys.exit(run())
