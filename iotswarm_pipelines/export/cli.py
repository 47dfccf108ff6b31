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

Only the command line is imported at first: the functions that run import Dagster, the source
and the stores (``export.commands``), so ``--help`` and bad arguments answer at once
(iotswarm_tests/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iotswarm_pipelines import help_text, json_logs, settings
from iotswarm_pipelines.command_line import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Parser, UsageError
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.file_options import ExportOptions, LiveRunOptions, option_kind
from iotswarm_pipelines.labels import Trigger, trigger_tags

if TYPE_CHECKING:
    import dagster as dg

PROG = "live-cosmos"
FAILED_WITHOUT_CAUSE = "the export run failed; see the Dagster run log"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line (unless the help says it), examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default" in text
            or action.default in (None, argparse.SUPPRESS, False)  # False: a flag left off
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


CONFIG_HELP = (
    "config file, flat (dsn='…' user='…' pass='…' bucket='…') or nested "
    '(oracle: { dsn: "…" user: "…" password: "…" } aws: { bucket: "…" bucket_prefix: "…" })'
)


def _shown(default: Any) -> str:
    """An option's default as ``--help`` says it (a float as written, a flag as on or off)."""
    if isinstance(default, bool):
        return "on" if default else "off"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _export_option(
    parser: argparse.ArgumentParser,
    name: str,
    flag: str | None = None,
    *,
    repeat: bool = False,
    more: str = "",
) -> None:
    """The flag of one of a live run's options, from its field in ``LiveRunOptions``.

    Its type and help are the model's, so ``--help``, the launchpad and the docs' table say the
    same; ``more`` adds what only this command line means. An option the config file may set
    is None when left out, so the file's value applies, else the model's default (the help
    says both); a run's own (``since``, ``dry_run``) takes the model's default. ``repeat``
    keeps the old tool's repeated flag where it took one value per table.
    """
    field = LiveRunOptions.model_fields[name]
    in_file = name in ExportOptions.model_fields
    kind = option_kind(name)
    flag = flag or "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": name, "default": None if in_file else field.default}
    if kind is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs["type"] = str if kind is list else kind
        kwargs["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        if kind is list or repeat:
            kwargs["action"] = "append"
    help = f"{field.description}{more}"
    if in_file:
        # An option with no default says in its description what leaving it out means.
        otherwise = "" if field.default is None else f", else {_shown(field.default)}"
        help += f" (default: the config file's {name}{otherwise})"
    parser.add_argument(flag, help=help.replace("%", "%%"), **kwargs)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dagster-home",
        help="record the runs in this Dagster instance (default: $DAGSTER_HOME if set, else a "
        "temporary one)",
    )
    _export_option(parser, "prog_name")
    _export_option(parser, "strict_json")
    json_logs.add_argument(parser)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    _export_option(parser, "since")
    _export_option(parser, "until")
    _export_option(parser, "dry_run")
    _common_options(parser)
    return parser


OLD_TOOL_TABLES = (
    catalogue.NMDB_1HOUR,
    catalogue.PRECIP_1MIN,
    catalogue.PRECIP_RAINE_1MIN,
    catalogue.SOILMET_30MIN,
)
"""``send-live-data --table all``: the old tool's four tables, in its order (batch sizes given
one per table follow this order)."""


def _send_live_data_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} send-live-data",
        error_prog=PROG,
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
        f"{', '.join(t.name for t in OLD_TOOL_TABLES)}",
    )
    _export_option(parser, "sites", "--site", more=" Repeat --site for more.")
    _export_option(parser, "fallback_hours")
    _export_option(
        parser,
        "batch_size",
        repeat=True,
        more=" One for all tables, or one per --table in the same order.",
    )
    _export_option(parser, "dry_run", "--dry")
    _common_options(parser)
    return parser


@dataclass(frozen=True)
class _Request:
    """What one invocation asks for, whichever command line said it.

    ``options`` are the export options given on the command line (``ExportOptions``' fields,
    over the config file's), except ``batch_size``, which may differ per table.
    """

    config: str
    tables: list[catalogue.Table]
    batch_sizes: dict[catalogue.Table, int | None]
    options: dict[str, Any]
    since: str | None
    until: str | None
    dry_run: bool
    dagster_home: str | None


def _tables(name: str) -> list[catalogue.Table]:
    """The tables a ``--table`` names: looked up here, once, and passed down as they are."""
    return catalogue.get_tables(name)


def _shared(args: argparse.Namespace) -> dict[str, Any]:
    """What both command lines spell alike."""
    json_logs.configure(args.log_format)
    given = {
        name: value
        for name in ExportOptions.model_fields
        if name != "batch_size" and (value := getattr(args, name, None)) is not None
    }
    return {"config": args.config, "dagster_home": args.dagster_home, "options": given}


def _flat_request(args: argparse.Namespace) -> _Request:
    tables = _tables(args.table)
    return _Request(
        tables=tables,
        batch_sizes=dict.fromkeys(tables),
        since=args.since,
        until=args.until,
        dry_run=args.dry_run,
        **_shared(args),
    )


def _send_live_data_request(args: argparse.Namespace) -> _Request:
    """The old tool's rules: ``all`` means its four tables; batch sizes are one or one per table."""
    tables: list[catalogue.Table] = []
    for name in args.table:
        chosen = list(OLD_TOOL_TABLES) if name.strip().lower() == "all" else _tables(name)
        tables += [t for t in chosen if t not in tables]
    sizes = args.batch_size or []
    if len(sizes) > 1 and len(sizes) != len(tables):
        raise UsageError(
            f"{len(sizes)} --batch-size values for {len(tables)} tables; give one for all "
            "tables or one per --table, in the same order"
        )
    if any(size < 1 for size in sizes):
        raise UsageError("--batch-size must be 1 or more rows per payload")
    per_table = sizes if len(sizes) > 1 else [sizes[0] if sizes else None] * len(tables)
    return _Request(
        tables=tables,
        batch_sizes=dict(zip(tables, per_table, strict=True)),
        since=None,
        until=None,
        dry_run=args.dry_run,
        **_shared(args),
    )


def _run_config(
    options: dict[str, Any], request: _Request, table: catalogue.Table
) -> dict[str, Any]:
    """``options`` (the command line's over the config file's) and the run's own values; what
    nothing says keeps its default."""
    from iotswarm_pipelines.export.assets import LiveExportConfig, cosmos_live_export

    optional = {
        "batch_size": request.batch_sizes[table],
        "since": request.since,
        "until": request.until,
    }
    op_config: dict[str, Any] = {
        "dry_run": request.dry_run,
        **options,
        **{k: v for k, v in optional.items() if v is not None},
    }
    LiveExportConfig(**op_config).check()  # a bad --since: fail before running
    return {
        "ops": {cosmos_live_export.op.name: {"config": op_config}},
        # The terminal gets the progress bar and the summary; the run's log stays in the instance
        # (and goes to stderr as JSON lines with --log-format json).
        "loggers": {"console": {"config": {"log_level": json_logs.console_level("CRITICAL")}}},
    }


def _export(
    table: catalogue.Table,
    resources: dict[str, Any],
    run_config: dict[str, Any],
    instance: dg.DagsterInstance | None,
    scope_tags: dict[str, str],
) -> tuple[bool, str]:
    from iotswarm_pipelines.export import assets
    from iotswarm_pipelines.export.commands import progress_bar
    from iotswarm_pipelines.export.export_runs import step_failure_cause
    from iotswarm_pipelines.export.summary_text import format_summary

    with progress_bar(table, PROG):
        tags = {**assets.run_tags(table), **trigger_tags(Trigger.CLI), **scope_tags}
        result = assets.execute_live_export(table, resources, run_config, instance, tags)
    if not result.success:
        cause = step_failure_cause(result.all_events) or FAILED_WITHOUT_CAUSE
        return False, f"{table.name}: export failed: {cause}"
    [event] = result.asset_materializations_for_node(assets.cosmos_live_export.op.name)
    summary = assets.summary_from_metadata(table, event.metadata)
    return True, format_summary(summary, resources["object_store"].build().describe())


def _flat(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    return _guarded(lambda: _flat_request(args))


def _send_live_data(argv: Sequence[str]) -> int:
    args = _send_live_data_parser().parse_args(argv)
    return _guarded(lambda: _send_live_data_request(args))


def _reconcile(argv: Sequence[str]) -> int:
    from iotswarm_pipelines.export import reconcile_cli

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
    import dagster as dg

    from iotswarm_pipelines.export import commands, pipeline
    from iotswarm_pipelines.export.config_file import parse_config

    try:
        request = request_of()
        config = parse_config(request.config)
        tables = request.tables
        resources = commands.resources(config)
        scope_tags = commands.health_scope(config)
        options = {**config.options, **request.options}
        run_configs = {table: _run_config(options, request, table) for table in tables}
        if warning := pipeline.fallback_warning(options.get("fallback_hours")):
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        commands.check_source(commands.source(config), config, tables, options.get("sites"))
    except commands.BAD_INPUT as exc:
        print(f"{PROG}: error: {commands.bad_input_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
