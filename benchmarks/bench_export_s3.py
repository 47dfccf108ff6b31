"""Objects per second to an S3-compatible server: the full export against raw boto3 and the old way.

(a) The full export (COSMOS rows -> payloads -> S3 -> watermarks, ``export_table``) against raw
    boto3 ``put_object`` of the same bodies with the same concurrency, straight to the server.
(b) With 20 ms of round-trip latency injected by a delaying proxy on loopback: the full export
    against the old uploader's way of working (one upload at a time, both state files rewritten
    after every payload), plus raw boto3 through the same proxy to show what the server allows.

The server is moto's (``python -m moto.server``) on loopback, which on a small machine tops out
near 150 PUT/s by itself; the figures say what this server allows, not what AWS S3 would.

    .venv/bin/python -m benchmarks.bench_export_s3 [--sites 8] [--days 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import boto3
from dagster_aws.s3 import S3Resource

from benchmarks.delay_proxy import delay_proxy
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import S3ObjectStore
from iotswarm_pipelines.export.pipeline import build_objects, export_table
from iotswarm_pipelines.export.state import advance, empty_state
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.watermarks import batch_rows
from iotswarm_tests.services import moto_server

TABLE = catalogue.SOILMET_30MIN
PREFIX = "fdri/cosmos_swarm"
REGION = "eu-west-2"
START = datetime(2024, 6, 1)


@dataclass(frozen=True)
class Rate:
    per_second: float
    cpu_ms: float  # this process's CPU (all threads) per object

    def __str__(self) -> str:
        return f"{self.per_second:7.1f} objects/s ({self.cpu_ms:.1f} ms CPU/object)"


def measure(count: int, work: Callable[[], None]) -> Rate:
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_before, started = cpu(), time.perf_counter()
    work()
    elapsed, used = time.perf_counter() - started, cpu() - cpu_before
    return Rate(count / elapsed, 1000 * used / count)


def new_bucket(endpoint: str) -> str:
    name = f"iotswarm-bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return name


def s3_store(endpoint: str, concurrency: int) -> S3ObjectStore:
    return S3ObjectStore(
        s3=S3Resource(endpoint_url=endpoint, region_name=REGION),
        bucket=new_bucket(endpoint),
        prefix=PREFIX,
        max_concurrency=concurrency,
    )


def s3_store_offline() -> S3ObjectStore:
    """A store for dry runs, which never contact it."""
    return S3ObjectStore(s3=S3Resource(region_name=REGION), bucket="unused", prefix=PREFIX)


def raw_boto3(endpoint: str, objects: list[tuple[str, bytes]], concurrency: int) -> Rate:
    """Plain put_object calls of prebuilt bodies on a thread pool: the ceiling for this server.

    The client has the same configuration as the store's (pool size, retries), so the ratio
    measures what the export adds, not a difference in boto3 settings.
    """
    store = s3_store(endpoint, concurrency)
    client, bucket = store.client(), store.bucket

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1], ContentType="application/json")

    def work() -> None:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(put, objects))

    return measure(len(objects), work)


def full_export(endpoint: str, db_url: str, work: Path, end: datetime, concurrency: int) -> Rate:
    """export_table from the database: read, build payloads, upload, save watermarks."""
    store = s3_store(endpoint, concurrency)
    state = StateStore(state_dir=str(work / f"state-{uuid.uuid4().hex[:8]}"))
    hours = (end - START).total_seconds() / 3600 + 1
    summaries = []

    def run() -> None:
        summaries.append(
            export_table(
                TABLE,
                source=CosmosSource(url=db_url),
                store=store,
                state=state,
                fallback_hours=hours,
                now=end,
            )
        )

    rate = measure(1, run)
    [summary] = summaries
    assert summary.failed == 0 and summary.objects_stored > 0, summary
    n = summary.objects_stored
    return Rate(rate.per_second * n, rate.cpu_ms / n)


def old_way(endpoint: str, objects: list[tuple[str, bytes, datetime, str]], work: Path) -> Rate:
    """The old uploader: one upload at a time, both state files rewritten after every payload."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)  # boto3 defaults
    bucket = new_bucket(endpoint)
    main, backup = work / "old.pickle", work / "old.pickle.backup"

    def run() -> None:
        state = empty_state()
        for key, body, newest, site_id in objects:
            client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
            state = advance(state, {site_id: newest})
            for path in (main, backup):
                with open(path, "wb") as f:
                    pickle.dump(state, f)

    return measure(len(objects), run)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs in (a)")
    args = parser.parse_args()
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(key, value)
    c, rtt = args.concurrency, args.latency_ms

    with tempfile.TemporaryDirectory(prefix="iotswarm-bench-") as tmp:
        work = Path(tmp)
        db_url = f"sqlite:///{work / 'cosmos.sqlite'}"
        end = START + timedelta(days=args.days)
        sites = list(catalogue.SITE_IDS[: args.sites])
        generate(db_url, start=START, end=end, sites=sites, tables=[TABLE.name])
        rows = CosmosSource(url=db_url).rows_between(TABLE, START - timedelta(hours=1), end)
        built = [
            (key, body, max(r["DATE_TIME"] for r in batch), batch[0]["SITE_ID"])
            for key, body, batch in build_objects(TABLE, PREFIX, batch_rows(rows, 1))
        ]
        objects = [(key, body) for key, body, _, _ in built]
        print(
            f"{len(objects)} payloads of {TABLE.name} ({len(sites)} sites x {args.days} days, "
            f"mean {sum(len(b) for _, b in objects) / len(objects):.0f} bytes); server: moto "
            f"(python -m moto.server) on loopback, a fresh one per pair; concurrency {c}; {load()}"
        )

        # Warm up (imports, first engine, boto3's service model) so no run pays for it alone.
        export_table(
            TABLE,
            source=CosmosSource(url=db_url),
            store=s3_store_offline(),
            state=StateStore(state_dir=str(work / "warm-up")),
            since=START,
            until=end,
            dry_run=True,
        )
        with moto_server() as moto:
            raw_boto3(moto, objects[: 2 * c], c)

        # (a) Pairs on a fresh server each (moto slows as it fills), in alternating order.
        ratios = []
        for round_ in range(args.rounds):
            with moto_server() as moto:
                if round_ % 2:
                    full = full_export(moto, db_url, work, end, c)
                    raw = raw_boto3(moto, objects, c)
                else:
                    raw = raw_boto3(moto, objects, c)
                    full = full_export(moto, db_url, work, end, c)
            ratios.append(full.per_second / raw.per_second)
            print(f"(a) pair {round_ + 1}: raw boto3 put_object x{c}: {raw}")
            print(f"(a) pair {round_ + 1}: full export_table x{c}:    {full}")
            print(f"(a) pair {round_ + 1}: ratio {ratios[-1]:.2f}; {load()}")
        print(
            f"(a) ratio full export / raw boto3, median of {len(ratios)} pairs = "
            f"{statistics.median(ratios):.2f} (target >= 0.9)"
        )

        # (b) The same data behind a round trip of --latency-ms.
        with moto_server() as moto, delay_proxy(moto, round_trip=rtt / 1000) as slow:
            old = old_way(slow, built, work)
            new = full_export(slow, db_url, work, end, c)
            raw_slow = raw_boto3(slow, objects, c)
        print(f"(b) {rtt:.0f} ms RTT, old way (1 at a time, 2 state files per payload): {old}")
        print(f"(b) {rtt:.0f} ms RTT, full export_table x{c}: {new}")
        print(
            f"(b) {rtt:.0f} ms RTT, raw boto3 put_object x{c}: {raw_slow} (what the server allows)"
        )
        print(
            f"(b) ratio full export / old way = {new.per_second / old.per_second:.2f} "
            f"(target >= 5); raw boto3 / old way = {raw_slow.per_second / old.per_second:.2f}; "
            f"{load()}"
        )


if __name__ == "__main__":
    main()
