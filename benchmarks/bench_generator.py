"""Rows per minute the sample generator writes into a fresh SQLite file (target: 1,000,000).

Wall-clock time of ``generate`` for all 51 sites and all five tables over ``--days`` days,
including creating the tables, the physics and the inserts; CPU time (this process and its
worker processes) is printed too because the machine is shared.

    .venv/bin/python -m benchmarks.bench_generator [--days 7] [--sites ALIC1,BALRD] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from iotswarm_pipelines.cosmos.sample import generate

TARGET_ROWS_PER_MINUTE = 1_000_000
START = datetime(2024, 6, 1)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--sites", help="comma-separated site IDs (default: all 51)")
    args = parser.parse_args()
    sites = args.sites.split(",") if args.sites else None
    with tempfile.TemporaryDirectory(prefix="iotswarm-bench-generator-") as folder:
        url = f"sqlite:///{Path(folder) / 'cosmos.sqlite'}"
        wall, cpu = time.perf_counter(), _cpu_seconds()
        counts = generate(
            url,
            start=START,
            end=START + timedelta(days=args.days),
            sites=sites,
            progress=True,
            workers=args.workers,
        )
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    rows = sum(counts.values())
    per_minute = rows / wall * 60
    for name, n in counts.items():
        print(f"{name:<26} {n:>12,} rows")
    print(f"{rows:,} rows in {wall:.1f} s wall ({cpu:.1f} s CPU)")
    print(
        f"{per_minute:,.0f} rows/min wall, {rows / cpu * 60:,.0f} rows/min CPU; "
        f"{per_minute / TARGET_ROWS_PER_MINUTE:.2f}x the {TARGET_ROWS_PER_MINUTE:,} rows/min target"
    )


if __name__ == "__main__":
    main()
