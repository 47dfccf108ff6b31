"""Payload building speed: CR1000X text + object key per row, on one core.

Target (issue 3): a dry run builds payloads for at least 20,000 rows per second on one core.
Both paths measured are single-threaded (a dry run starts no upload threads), so one process
uses one core.
Two figures: (a) payload text + key for rows already in memory (the pure building cost) and
(b) the export's dry run end to end, rows read from the sample SQLite database included.

    .venv/bin/python -m benchmarks.bench_payloads [--sites 51] [--days 6] [--tables ...]

The widest table (SOILMET, 149 columns) is the hard case; the 1-minute tables are narrow.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample.generator import default_range, generate
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.pipeline import build_objects, export_table
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.watermarks import batch_rows

TARGET_ROWS_PER_S = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=51)
    parser.add_argument("--days", type=float, default=6)
    parser.add_argument(
        "--tables", nargs="+", default=[catalogue.SOILMET_30MIN.name, catalogue.PRECIP_1MIN.name]
    )
    args = parser.parse_args()
    for table in args.tables:
        measure(catalogue.get_table(table), args.sites, args.days)


def measure(table: catalogue.Table, sites: int, days: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cosmos.sqlite'}"
        start, end = default_range(days)
        generate(
            url, start=start, end=end, sites=list(catalogue.SITE_IDS[:sites]), tables=[table.name]
        )
        source = CosmosSource(url=url)

        rows = list(source.rows_between(table.name, start, end))
        began = time.perf_counter()
        built = sum(1 for _ in build_objects(table, "p", batch_rows(rows, 1)))
        in_memory = len(rows) / (time.perf_counter() - began)
        assert built == len(rows)

        began = time.perf_counter()
        summary = export_table(
            table,
            source=source,
            store=LocalObjectStore(root=str(Path(tmp) / "objects")),
            state=StateStore(state_dir=str(Path(tmp) / "state")),
            fallback_hours=(end - start + timedelta(hours=1)).total_seconds() / 3600,
            dry_run=True,
        )
        dry_run = summary.rows_read / (time.perf_counter() - began)

    print(f"{table.name}: {len(rows):,} rows, {len(table.columns)} columns, batch size 1, 1 core")
    for label, rate in (("payload + key, rows in memory", in_memory), ("export dry run", dry_run)):
        print(
            f"  {label:<32} {rate:>10,.0f} rows/s   ratio to target {rate / TARGET_ROWS_PER_S:.2f}"
        )


if __name__ == "__main__":
    main()
