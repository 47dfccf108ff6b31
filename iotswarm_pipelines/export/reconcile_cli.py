"""``live-cosmos reconcile CONFIG TABLE|all --since DATE [--until DATE] [--heal]``.

Checks that the object store holds every source row of each UTC day, with the same config file
as the export, and with ``--heal`` re-exports what is missing. It calls the reconciliation runner
directly (not through a Dagster run per day: a month of five tables would be 150 runs). Exit
codes: 0 complete, 1 rows missing and not healed (or the store failed), 2 bad input, 130/143
stopped by SIGINT/SIGTERM. Dagster, the source and the stores are imported by the functions that
run, so ``--help`` and bad arguments answer at once.

Like the export, it first checks the bucket with one request (``ObjectStore.check``), so an
endpoint that never answers is named after one read timeout, and its reads keep the store's
timeouts and retries; a signal ends it at once with one line (nothing new is started, reads stuck
on a silent endpoint are not waited for: a heal stores whole payloads, so none is half done).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from tqdm import tqdm

from iotswarm_pipelines import help_text, payloads, settings
from iotswarm_pipelines.command_line import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Parser
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.export.reconciliation import TableDay, days_between
from iotswarm_pipelines.export.store_errors import StoreUnavailableError
from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.metrics.export import ReconciledDay, push_reconcile

if TYPE_CHECKING:
    from iotswarm_pipelines.export.config_file import LiveCosmosConfig
    from iotswarm_pipelines.export.reconcile_record import DayRecorder

PROG = "live-cosmos reconcile"


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Check that every COSMOS row of each UTC day is in the object store "
        "(S3 or a folder); with --heal, re-export the missing rows.",
        epilog=help_text.epilog(
            [f'{PROG} livecosmos.cfg all --since "$(date -u -d yesterday +%F)" --heal'],
            help_text.RECONCILE_EXITS,
        ),
        formatter_class=help_text.Formatter,
    )
    parser.add_argument("config", help="the live-cosmos config file")
    parser.add_argument("table", help="COSMOS table (either spelling) or 'all'")
    parser.add_argument("--since", required=True, help="first UTC day, e.g. 2024-06-01")
    parser.add_argument("--until", help="last UTC day, included (default: today)")
    parser.add_argument(
        "--heal", action="store_true", help="re-export missing rows (same payloads and keys)"
    )
    parser.add_argument(
        "--dagster-home",
        help="record the days as cosmos/reconciliation partitions in this Dagster instance "
        "(default: $DAGSTER_HOME if set, else not recorded)",
    )
    return parser


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{option} {value!r} is not a date; write it like 2024-06-01 (UTC)"
        ) from None


def _report(result: TableDay) -> None:
    """Days with anything to say get a line; incomplete ones also their first missing rows."""
    from iotswarm_pipelines.export.reconcile import describe

    counts = result.counts()
    if result.complete and not (counts["duplicated"] or counts["orphaned"] or counts["healed"]):
        return
    tqdm.write(describe(result), file=sys.stdout)
    for site, problems in result.problems(limit=3).items():
        detail = "; ".join(f"{name}: {', '.join(values)}" for name, values in problems.items())
        tqdm.write(f"    {site}  {detail}", file=sys.stdout)


def _warn(line: str) -> None:
    tqdm.write(f"{PROG}: warning: {line}", file=sys.stderr)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread as ^C raises ``KeyboardInterrupt``."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


def run(argv: Sequence[str]) -> int:
    """Reconcile, and on SIGINT or SIGTERM stop at once with one line and exit 130 or 143."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except _Terminated:
        return _stopped(signal.SIGTERM)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _stopped(by: signal.Signals) -> int:
    print(
        f"{PROG}: stopped by {by.name}; the days reported above stand, the rest were not checked "
        "(a heal stores whole payloads: run it again)",
        file=sys.stderr,
    )
    return 128 + by


def _run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    from iotswarm_pipelines.clock import utc_now
    from iotswarm_pipelines.export import commands
    from iotswarm_pipelines.export.assets import DEFAULT_BATCH_SIZES
    from iotswarm_pipelines.export.config_file import parse_config
    from iotswarm_pipelines.export.reconcile import reconcile_day

    try:
        config = parse_config(args.config)
        options = config.export_options
        tables = catalogue.get_tables(args.table)
        until = _day("--until", args.until) if args.until else utc_now().date()
        days = days_between(_day("--since", args.since), until)
        source = commands.source(config)
        commands.check_source(source, config, tables, options.sites, require_rows=True)
        built = commands.stores(config)
        store, state = built["object_store"].build(), built["state"].build()
        payload_format = options.payload_format
    except commands.BAD_INPUT as exc:
        print(f"{PROG}: error: {commands.bad_input_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        store.check()  # a missing bucket or a silent endpoint: one line before any listing
    except StoreUnavailableError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    recorder = _recorder(args.dagster_home, config, payload_format)
    incomplete = missing = 0
    pushgateway = exposition.pushgateway_url(options.pushgateway)
    bar = tqdm(total=len(days) * len(tables), unit=" days", disable=None, file=sys.stderr)
    try:
        for table in tables:
            bar.set_description(table.name)
            reconciled = []
            for day in days:
                result = reconcile_day(
                    table,
                    day,
                    source=source,
                    store=store,
                    state=state,
                    sites=options.sites,
                    batch_size=options.batch_size or DEFAULT_BATCH_SIZES[table.name],
                    payload_format=payload_format,
                    heal=args.heal,
                )
                _report(result)
                reconciled.append(ReconciledDay.of(result))
                if recorder is not None:
                    recorder.record(result)
                incomplete += not result.complete
                missing += result.missing_after_heal
                bar.update(1)
                bar.set_postfix(missing=missing, refresh=False)
            push_reconcile(pushgateway, table.name, reconciled, time.time(), _warn)
    except (SourceError, ClientError, BotoCoreError, OSError) as exc:
        bar.close()
        print(f"{PROG}: error: reconciliation stopped: {first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except BaseException:  # ^C or SIGTERM: the bar's line ends before the one saying so
        bar.close()
        raise
    bar.close()
    checked = f"{len(days)} day(s) x {len(tables)} table(s) in {store.describe()}"
    if incomplete:
        advice = "" if args.heal else "; run again with --heal to re-export them"
        print(f"{missing} rows missing on {incomplete} of {checked}{advice}")
        return EXIT_FAILED
    print(f"complete: {checked}")
    return EXIT_OK


def _recorder(
    dagster_home: str | None, config: LiveCosmosConfig, payload_format: payloads.PayloadFormat
) -> DayRecorder | None:
    """Records the days in the UI's instance (``reconcile_record``), when there is one."""
    import dagster as dg

    from iotswarm_pipelines.export import commands, reconcile_record
    from iotswarm_pipelines.export.reconcile_record import DayRecorder

    home = settings.dagster_home(dagster_home)
    if home is None:
        return None
    resources = commands.resources(config)
    options = config.export_options
    op_config = reconcile_record.op_config(options.sites, options.batch_size, payload_format)
    instance = dg.DagsterInstance.from_config(home)
    return DayRecorder(instance, resources, op_config, resources["object_store"].build().describe())
