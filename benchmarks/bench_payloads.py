"""Payload building speed: CR1000X text + object key per SOILMET row, on one core.

Target (issue 3): a dry run builds payloads for at least 20,000 rows per second on one core.
Both paths measured are single-threaded (a dry run starts no upload threads), so one process
uses one core.
Two figures: (a) payload text + key for rows already in memory (the pure building cost) and
(b) the export's dry run end to end, rows read from the sample SQLite database included.

    .venv/bin/python -m benchmarks.bench_payloads [--sites 51] [--days 6]
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
TABLE = catalogue.SOILMET_30MIN.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=51)
    parser.add_argument("--days", type=float, default=6)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cosmos.sqlite'}"
        start, end = default_range(args.days)
        sites = list(catalogue.SITE_IDS[: args.sites])
        generate(url, start=start, end=end, sites=sites, tables=[TABLE])
        source = CosmosSource(url=url)

        rows = list(source.rows_between(TABLE, start, end))
        began = time.perf_counter()
        built = sum(1 for _ in build_objects(catalogue.SOILMET_30MIN, "p", batch_rows(rows, 1)))
        in_memory = len(rows) / (time.perf_counter() - began)
        assert built == len(rows)

        began = time.perf_counter()
        summary = export_table(
            TABLE,
            source=source,
            store=LocalObjectStore(root=str(Path(tmp) / "objects")),
            state=StateStore(state_dir=str(Path(tmp) / "state")),
            fallback_hours=(end - start + timedelta(hours=1)).total_seconds() / 3600,
            dry_run=True,
        )
        dry_run = summary.rows_read / (time.perf_counter() - began)

    print(f"{TABLE}: {len(rows):,} rows, {len(catalogue.SOILMET_30MIN.columns)} columns, 1 core")
    for label, rate in (("payload + key, rows in memory", in_memory), ("export dry run", dry_run)):
        print(
            f"  {label:<32} {rate:>10,.0f} rows/s   ratio to target {rate / TARGET_ROWS_PER_S:.2f}"
        )


if __name__ == "__main__":
    main()
