"""``cosmos-sample``: write (and optionally keep growing) the sample COSMOS database.

Bad input ends with one line on stderr and exit status 2; a database failure while writing
with one line and status 1. The generator, SQLAlchemy and the drivers are imported once the
arguments parsed, so ``--help`` and bad arguments answer at once.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

from iotswarm_pipelines import help_text, settings
from iotswarm_pipelines.clock import naive_utc
from iotswarm_pipelines.command_line import Parser
from iotswarm_pipelines.errors import first_line

PROG = "cosmos-sample"
DEFAULT_DAYS = 2.0


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date/time: use ISO format such as 2026-11-27 or 2026-11-27T14:00"
        ) from None
    return naive_utc(value)


def _names(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Write a realistic synthetic COSMOS-UK database (all times naive UTC). "
        "Rows already in the database are kept; only newer rows are added.",
    )
    p.add_argument("--url", help="SQLAlchemy URL (default: the project's sample SQLite file)")
    p.add_argument("--start", type=_when, help="rows with DATE_TIME after this (ISO)")
    p.add_argument("--end", type=_when, help="rows up to this (ISO; default: this hour)")
    p.add_argument("--days", type=float, help=f"length of the range (default {DEFAULT_DAYS:g})")
    p.add_argument("--sites", type=_names, help="site IDs, comma-separated (default: all 51)")
    p.add_argument("--tables", type=_names, help="table names, comma-separated (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--follow", action="store_true", help="then keep appending rows (Ctrl-C)")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="follow mode: catch up to now at this many times real time, then follow the clock "
        "(never dates a row after now; default 1)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes computing days (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.formatter_class = help_text.Formatter
    p.epilog = help_text.epilog(
        [
            "cosmos-sample --url sqlite:///trial.sqlite --start 2024-06-01 --days 7 "
            "--sites ALIC1,BALRD"
        ],
        help_text.SAMPLE_EXITS,
    )
    return p


def _range(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[datetime, datetime]:
    from iotswarm_pipelines.cosmos.sample.generator import default_range

    given = [x is not None for x in (args.start, args.end, args.days)]
    if all(given):
        parser.error("give at most two of --start, --end and --days")
    if args.days is not None and not args.days > 0:
        parser.error(f"--days must be > 0, got {args.days:g}")
    days = args.days or DEFAULT_DAYS
    if args.start is None and args.end is None:
        return default_range(days)
    if args.end is None:
        end = args.start + timedelta(days=days) if args.days else default_range()[1]
        return args.start, end
    return args.start or args.end - timedelta(days=days), args.end


def _on_step(when: datetime, counts: dict[str, int]) -> None:
    added = sum(counts.values())
    if added:
        parts = ", ".join(f"{name} +{n}" for name, n in counts.items() if n)
        print(f"{when:%Y-%m-%d %H:%M}  {parts}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    import psycopg
    import sqlalchemy as sa

    from iotswarm_pipelines.cosmos.sample.follow import follow
    from iotswarm_pipelines.cosmos.sample.generator import SampleError, generate

    start, end = _range(args, parser)
    url = args.url or settings.sample_db_url()
    if args.follow and not args.speed > 0:
        parser.error(f"--speed must be > 0, got {args.speed:g}")
    try:
        counts = generate(
            url,
            start=start,
            end=end,
            sites=args.sites,
            tables=args.tables,
            seed=args.seed,
            progress=not args.quiet,
            workers=args.workers,
        )
        for name, n in counts.items():
            print(f"{name:<26} {n:>12,} rows written")
        print(f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC into {_safe(url)}")
        if args.follow:
            print(
                f"following: catching up to now at {args.speed:g}x real time, then in real time "
                "(no row is dated after now); Ctrl-C stops",
                flush=True,
            )
            totals = follow(
                url,
                seed=args.seed,
                sites=args.sites,
                tables=args.tables,
                speed=args.speed,
                on_step=_on_step,
            )
            print(f"follow mode stopped after {sum(totals.values()):,} rows")
    except SampleError as exc:
        parser.error(str(exc))
    except (sa.exc.SQLAlchemyError, sqlite3.Error, psycopg.Error, OSError) as exc:
        print(f"{PROG}: database error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun to continue where the data ends", file=sys.stderr)
        return 130
    return 0


def _safe(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
