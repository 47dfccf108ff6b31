"""Share-nothing Celery (README, "Scaling out"): the same swarm, and a one-week backfill of
LEVEL1_PRECIP_1MIN for 51 sites, on 1 and on 2 isolated workers.

Run: `.venv/bin/python -m benchmarks.bench_share_nothing` (about 15 minutes; as root, for
`unshare --mount`). Needs the machine's PostgreSQL, Redis and Mosquitto (`make services`); starts
its own moto S3 server.

The deployment is the test's (`iotswarm_tests/test_share_nothing.py`): instance and source in
PostgreSQL, step outputs, objects, state and sessions in S3, each worker in its own mount
namespace with private folders. Both settings have the same 4 worker processes in total (1 x 4,
2 x 2). Settings alternate in pairs (1 then 2 workers), `--pairs` times, fresh workers per setting,
so each swarm's first run on a setting is cold (pool processes import the code location).

* swarm: `bench_swarm_celery`'s swarm (300 devices, 3,000 QoS 1 messages, 4 shards, verifier),
  its run wall (RUN_START to RUN_SUCCESS) and msgs/s;
* backfill: the 7 day partitions of `cosmos_history_export_job` for LEVEL1_PRECIP_1MIN, all 51
  sites (514,080 rows), launched 4 at a time, `batch_size` 60 (one object per site-hour; 1, the
  default, would make this a benchmark of the test S3 server's PUTs); rows/s = rows read by the 7
  runs / (last RUN_SUCCESS - first RUN_START).

It prints each measurement and the ratio of 2 workers to 1 per pair, and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from benchmarks.bench_swarm_celery import SITES as SWARM_SITES
from benchmarks.bench_swarm_celery import TABLE as SWARM_TABLE
from benchmarks.bench_swarm_celery import one_run, report_line, swarm_config
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_tests.celery_workers import celery_workers, execute
from iotswarm_tests.conftest import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL
from iotswarm_tests.services import moto_server
from iotswarm_tests.share_nothing import (
    fresh_database,
    make_bucket,
    prod_env,
    reader_env,
    run_worker,
    sample_source,
)

PRECIP = "LEVEL1_PRECIP_1MIN"
WEEK = datetime(2024, 6, 1)
DAYS = 7
PROCESSES = 4


def backfill(env: dict[str, str], batch_size: int) -> dict[str, float]:
    """The week's 7 partitions, 4 launches at a time: rows read and rows/s over the runs' span."""
    keys = [f"{(WEEK + timedelta(days=d)):%Y-%m-%d}|{PRECIP}" for d in range(DAYS)]
    config = {"ops": {"cosmos__history_export": {"config": {"batch_size": batch_size}}}}
    with ThreadPoolExecutor(max_workers=PROCESSES) as pool:
        launches = [
            pool.submit(
                execute, env, "cosmos_history_export_job", config, {"dagster/partition": key}
            )
            for key in keys
        ]
        results = [launch.result() for launch in launches]
    rows, starts, ends = 0, [], []
    for run, entries in results:
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for entry in entries:
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.RUN_START:
                starts.append(entry.timestamp)
            elif event.event_type == dg.DagsterEventType.RUN_SUCCESS:
                ends.append(entry.timestamp)
            elif event.is_step_materialization:
                rows += event.event_specific_data.materialization.metadata["rows_read"].value
    span = max(ends) - min(starts)
    return {"rows": rows, "span": span, "rows_per_s": rows / span}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="1-then-2-worker pairs")
    parser.add_argument("--per-site", type=int, default=30, help="swarm devices per site")
    parser.add_argument("--cycles", type=int, default=10, help="swarm messages per device")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=60, help="backfill rows per object")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    sites = [s.site_id for s in catalogue.SITES]
    with (
        tempfile.TemporaryDirectory(prefix="iotswarm-bench-sharenothing-") as tmp,
        moto_server() as s3_endpoint,
        fresh_database(PG_ADMIN_URL) as pg_url,
    ):
        began = time.perf_counter()
        sample_source(pg_url, WEEK, WEEK + timedelta(days=1), SWARM_SITES, [SWARM_TABLE])
        sample_source(pg_url, WEEK, WEEK + timedelta(days=DAYS), sites, [PRECIP])
        print(f"sample source: {time.perf_counter() - began:.0f} s", flush=True)
        env = prod_env(pg_url, s3_endpoint, make_bucket(s3_endpoint), (MQTT_HOST, MQTT_PORT))
        os.environ.update(reader_env(env))  # this process reads the runs from the instance
        root = Path(tmp)
        figures: dict[int, dict[str, list[float]]] = {1: {}, 2: {}}
        for pair in range(1, args.pairs + 1):
            for workers in (1, 2):
                setting = root / f"pair{pair}-{workers}"
                with celery_workers(
                    workers,
                    PROCESSES // workers,
                    env,
                    setting / "logs",
                    isolated_in=setting / "workers",  # under /tmp: private to each worker
                ) as group:
                    launcher = {
                        **run_worker(setting / "run-worker", env),
                        "IOTSWARM_CELERY_QUEUE": group.queue,
                    }
                    swarm = one_run(launcher, swarm_config(args, None))
                    label = f"pair {pair}, {workers} worker(s) x {PROCESSES // workers}"
                    print(report_line(f"{label} swarm", pair, swarm, None), flush=True)
                    week = backfill(launcher, args.batch_size)
                    print(
                        f"{label} backfill: {week['rows']:,} rows in {week['span']:.1f} s, "
                        f"{week['rows_per_s']:,.0f} rows/s",
                        flush=True,
                    )
                    for name, value in (
                        ("swarm_run_wall", swarm["run_wall"]),
                        ("swarm_msgs_per_s", swarm["msgs_per_s"]),
                        ("backfill_rows_per_s", week["rows_per_s"]),
                    ):
                        figures[workers].setdefault(name, []).append(value)
            ratio = {n: figures[2][n][-1] / figures[1][n][-1] for n in figures[1]}
            print(
                f"pair {pair}: 2 workers / 1 worker: swarm run wall "
                f"{ratio['swarm_run_wall']:.2f}x, backfill rows/s "
                f"{ratio['backfill_rows_per_s']:.2f}x",
                flush=True,
            )
        for workers in (1, 2):
            medians = {name: statistics.median(v) for name, v in figures[workers].items()}
            print(
                f"median, {workers} worker(s): swarm run wall {medians['swarm_run_wall']:.1f} s, "
                f"{medians['swarm_msgs_per_s']:,.0f} msgs/s; backfill "
                f"{medians['backfill_rows_per_s']:,.0f} rows/s",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
