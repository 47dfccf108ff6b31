"""Reconciling one day of LEVEL1_PRECIP_1MIN for 51 sites (73,440 rows) on the moto S3 server.

(a) ``reconcile_day`` on a complete export (the nightly case): wall time and S3 requests, against
    a raw boto3 listing of the same 51 site folders for that day on the same number of threads,
    the least any check of the bucket has to do (median of three back-to-back pairs).
(b) The naive way, reading every object of the day, measured on one site and scaled to 51.
(c) A heal after deleting 100 objects at random, then a clean second reconciliation.

Requests are counted with a botocore ``before-call`` hook on the store's client (API calls by
operation) and ``before-send`` (HTTP requests, retries included). The server is moto's on loopback
(``python -m moto.server``), which on a small machine takes about 150 PUT/s, so loading the
73,440 objects takes minutes; the figures say what this server allows, not what AWS S3 would.

    .venv/bin/python -m benchmarks.bench_reconcile [--sites 51] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

from benchmarks.bench_export_s3 import s3_store
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import keys
from iotswarm_pipelines.export.object_store import S3ObjectStore
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_pipelines.export.reconcile import SITE_WORKERS, reconcile_day
from iotswarm_pipelines.export.reconciliation import day_window
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_tests.export_fixtures import insert_rows, make_rows
from iotswarm_tests.services import moto_server

TABLE = catalogue.get_table("LEVEL1_PRECIP_1MIN")
DAY = date(2024, 6, 1)


class Requests:
    """Counts the S3 API calls (by operation) and HTTP requests a client makes."""

    def __init__(self, client) -> None:
        self.calls: Counter = Counter()
        self.sends = 0
        client.meta.events.register("before-call.s3", self._call)
        client.meta.events.register("before-send.s3", self._send)

    def _call(self, model, **_) -> None:
        self.calls[model.name] += 1

    def _send(self, **_) -> None:
        self.sends += 1

    def reset(self) -> None:
        self.calls.clear()
        self.sends = 0

    def __str__(self) -> str:
        ops = ", ".join(f"{n} {name}" for name, n in sorted(self.calls.items()))
        return f"{self.sends} HTTP requests ({ops})"


def load(
    work: Path, endpoint: str, sites: list[str]
) -> tuple[CosmosSource, S3ObjectStore, StateStore]:
    """Every site's 1,440 rows of DAY in SQLite, exported one row per object to a new bucket."""
    url = f"sqlite:///{work / 'cosmos.sqlite'}"
    after, _ = day_window(DAY)
    times = [after + timedelta(minutes=m + 1) for m in range(TABLE.rows_per_day)]
    for site in sites:
        insert_rows(url, TABLE.name, make_rows(TABLE.name, site, times))
    source = CosmosSource(url=url)
    store = s3_store(endpoint, 16)
    state = StateStore(state_dir=str(work / "state"))
    started = time.perf_counter()
    summary = export_table(
        TABLE, source=source, store=store, state=state, sites=sites, fallback_hours=None
    )
    print(
        f"loaded {summary.objects_stored} objects ({summary.rows_read} rows) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return source, store, state


def raw_listing(store: S3ObjectStore, sites: list[str]) -> int:
    """boto3 listing of each site folder from the day's first key to its last: keys seen."""
    after, until = day_window(DAY)
    until_ms = keys.epoch_ms(until)

    def site_keys(site: str) -> int:
        folder = keys.site_folder(store.prefix, site, TABLE)
        start = keys.start_after(folder, keys.epoch_ms(after))
        seen = 0
        for listed in store.list_from(folder, start):
            if (keys.key_time_ms(listed.key) or 0) > until_ms:
                break
            seen += 1
        return seen

    with ThreadPoolExecutor(SITE_WORKERS) as pool:
        return sum(pool.map(site_keys, sites))


def naive_one_site(store: S3ObjectStore, site: str) -> float:
    """Seconds to list one site's day and GET every object of it (the way not taken)."""
    after, until = day_window(DAY)
    folder = keys.site_folder(store.prefix, site, TABLE)
    wanted = [
        listed.key
        for listed in store.list_from(folder, keys.start_after(folder, keys.epoch_ms(after)))
        if (keys.key_time_ms(listed.key) or 0) <= keys.epoch_ms(until)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(SITE_WORKERS) as pool:
        list(pool.map(store.get, wanted))
    return time.perf_counter() - started


def timed(work):
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=len(catalogue.SITE_IDS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(key, value)
    sites = list(catalogue.SITE_IDS[: args.sites])
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        source, store, state = load(Path(tmp), endpoint, sites)
        requests = Requests(store.client())

        def reconcile(heal: bool = False):
            return reconcile_day(
                TABLE, DAY, source=source, store=store, state=state, sites=sites, heal=heal
            )

        pairs = []
        for _ in range(args.rounds):
            requests.reset()
            listing, listed = timed(lambda: raw_listing(store, sites))
            list_requests = requests.sends
            requests.reset()
            took, result = timed(reconcile)
            assert result.complete and result.counts()["rows"] == listed == len(sites) * 1440
            pairs.append((listing, took))
            print(
                f"  raw listing {listing:6.2f} s ({list_requests} requests, {listed} keys) | "
                f"reconcile {took:6.2f} s, {requests}, {result.objects_read} objects read"
            )
        listing, took = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        ratio = statistics.median(t / raw for raw, t in pairs)
        rows = result.counts()["rows"]
        print(
            f"(a) reconcile_day, {len(sites)} sites, {rows} rows: {took:.2f} s "
            f"({rows / took:,.0f} rows/s), {requests}; raw listing {listing:.2f} s; "
            f"ratio {ratio:.2f}x (median of {args.rounds} pairs)"
        )

        one = naive_one_site(store, sites[0])
        print(
            f"(b) naive GET of every object: {one:.2f} s for one site (1440 GETs) -> "
            f"~{one * len(sites):.0f} s and {1440 * len(sites)} GETs for {len(sites)} sites, "
            f"{one * len(sites) / took:.0f}x the reconciliation"
        )

        day_keys = [
            k
            for k in store.list_keys()
            if (keys.key_time_ms(k) or 0) <= keys.epoch_ms(day_window(DAY)[1])
        ]
        gone = random.Random(17).sample(day_keys, 100)
        client = store.client()
        for key in gone:
            client.delete_object(Bucket=store.bucket, Key=key)
        requests.reset()
        healing, healed = timed(lambda: reconcile(heal=True))
        print(
            f"(c) heal after deleting 100 objects: {healing:.2f} s, {healed.counts()['missing']} "
            f"missing, {healed.healed} healed, {requests}"
        )
        requests.reset()
        checking, again = timed(reconcile)
        assert again.complete and again.counts()["missing"] == 0
        print(f"    then clean in {checking:.2f} s, {requests}")


if __name__ == "__main__":
    main()
