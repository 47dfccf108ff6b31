"""Peak memory of exporting a 1,000,000-row backlog (target: under 1 GiB).

A LEVEL1_PRECIP_1MIN backlog (10 sites x 100,000 minutes) is written to a SQLite file, then
``export_table`` runs in a fresh child process whose peak RSS (``ru_maxrss``) is reported, so
the figure is the export's alone, not the database set-up's. Default: a dry run with one row per
payload (1,000,000 payloads built and counted); ``--store local`` also writes the objects to a
folder (use ``--batch-size 60`` there unless you want a million files).

    .venv/bin/python -m benchmarks.bench_export_memory [--rows 1000000] [--store dry|local]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema

TABLE = catalogue.PRECIP_1MIN
SITES = 10
TARGET_BYTES = 1 << 30
START = datetime(2024, 1, 1)


def build_database(url: str, rows: int) -> None:
    """Plausible 1-minute rain rows, inserted in chunks (only the export is measured)."""
    engine = sa.create_engine(url)
    table = schema.sa_table(TABLE.name)
    schema.metadata.create_all(engine, tables=[table])
    per_site = rows // SITES
    values = [c for c in TABLE.column_names if c not in (catalogue.SITE_ID, catalogue.DATE_TIME)]
    with engine.begin() as conn:
        for site in catalogue.SITE_IDS[:SITES]:
            for first in range(0, per_site, 50_000):
                chunk = [
                    {
                        catalogue.SITE_ID: site,
                        catalogue.DATE_TIME: START + timedelta(minutes=i + 1),
                        **{name: round((i % 97) * 0.01 + n, 2) for n, name in enumerate(values)},
                    }
                    for i in range(first, min(first + 50_000, per_site))
                ]
                conn.execute(table.insert(), chunk)
    engine.dispose()


def child(url: str, folder: str, store: str, batch_size: int) -> None:
    """The measured process: one export_table call over the whole backlog."""
    from iotswarm_pipelines.cosmos.source import CosmosSource
    from iotswarm_pipelines.export.object_store import LocalObjectStore
    from iotswarm_pipelines.export.pipeline import export_table
    from iotswarm_pipelines.export.state_store import StateStore

    began = time.perf_counter()
    summary = export_table(
        TABLE,
        source=CosmosSource(url=url),
        store=LocalObjectStore(root=str(Path(folder) / "objects"), prefix="bench"),
        state=StateStore(state_dir=str(Path(folder) / "state")),
        fallback_hours=None,  # the whole backlog of never-seen sites
        batch_size=batch_size,
        dry_run=store == "dry",
    )
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "rows": summary.rows_read,
                "payloads": summary.payloads_built,
                "objects": summary.objects_stored,
                "seconds": seconds,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("dry", "local"), default="dry")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.store, args.batch_size)
        return

    with tempfile.TemporaryDirectory(prefix="iotswarm-bench-export-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'cosmos.sqlite'}"
        began = time.perf_counter()
        build_database(url, args.rows)
        print(f"database: {args.rows:,} rows in {time.perf_counter() - began:.0f} s", flush=True)
        command = [sys.executable, "-m", "benchmarks.bench_export_memory", "--child", url, tmp]
        command += ["--store", args.store, "--batch-size", str(args.batch_size)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    peak = result["peak_rss_bytes"]
    print(
        f"export ({args.store}, batch_size {args.batch_size}): {result['rows']:,} rows, "
        f"{result['payloads']:,} payloads, {result['objects']:,} objects in "
        f"{result['seconds']:.1f} s = {result['rows'] / result['seconds']:,.0f} rows/s; "
        f"peak RSS {peak / 2**20:.0f} MiB (target < {TARGET_BYTES / 2**20:.0f} MiB): "
        + ("OK" if peak < TARGET_BYTES else "OVER")
    )


if __name__ == "__main__":
    main()
