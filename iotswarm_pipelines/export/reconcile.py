"""Reconcile one COSMOS table with the object store, day by day, and heal the missing rows.

The rules live in ``reconciliation``; this module reads the source, the object store and the
watermarks for them. Per site and UTC day it:

* reads the site's rows of the day from the source (one index range scan);
* lists only the site's key folder from the day's first millisecond on (S3 ``StartAfter``, so the
  bucket is never walked), until the first object past the day whose rows are all later;
* reads only the objects it cannot vouch for without reading: a key that is exactly the one the
  export would have made for some of these rows, with a listed MD5 (S3's ETag) equal to the key's,
  holds exactly those rows, since the key ends with the MD5 of the stored text;
* predicts those keys with the export's own batching (``watermarks.aligned_batches``, over the
  day widened to whole batches) and payload text (``payload_format``, as configured for the
  export), so with any ``batch_size`` a complete day is vouched for without reading its objects;
* heals: every predicted payload holding a missing row is stored again whole, through the
  export's own payload and key code (``pipeline.build_objects``), so a heal repeated, racing the
  live export or followed by a replay rewrites the same keys. The state is only read: a heal
  never moves a watermark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from typing import TYPE_CHECKING

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.daemon_pool import DaemonPool
from iotswarm_pipelines.export import keys, reconciliation
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.pipeline import build_object, build_objects, select_sites
from iotswarm_pipelines.export.reconciliation import SiteDay, TableDay, UnreadablePayloadError
from iotswarm_pipelines.export.watermarks import Row, aligned_batches, batch_window

if TYPE_CHECKING:
    from iotswarm_pipelines.cosmos.source import CosmosSource
    from iotswarm_pipelines.export.object_store import ObjectStore
    from iotswarm_pipelines.export.state_backend import StateBackend

_log = logging.getLogger(__name__)

SITE_WORKERS = 8
"""Sites reconciled at once: each is a source query, one or two listings and a few reads."""


@dataclass
class _SiteScan:
    report: SiteDay
    heal: list[tuple[list[Row], int]]  # the export's payloads holding missing rows, and how many
    listed: int
    read: int


@dataclass
class _Holdings:
    rows: dict[str, tuple[datetime, ...]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    listed: int = 0
    read: int = 0


def expected_objects(
    table: catalogue.Table,
    prefix: str,
    batches: Sequence[list[Row]],
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
) -> dict[str, tuple[datetime, ...]]:
    """The keys the export makes for these payloads, with their rows."""
    return {
        key: tuple(row[catalogue.DATE_TIME] for row in batch)
        for key, _body, batch in build_objects(table, prefix, iter(batches), payload_format)
    }


def _read_rows(store: ObjectStore, key: str, holdings: _Holdings) -> tuple[datetime, ...] | None:
    """The rows of one object, None if it vanished; unreadable objects are noted."""
    try:
        body = store.get(key)
    except KeyError:  # deleted between the listing and the read
        return None
    holdings.read += 1
    try:
        return reconciliation.payload_rows(body)[1]
    except UnreadablePayloadError:
        holdings.unreadable.append(key)
        return None


def scan_folder(
    store: ObjectStore,
    folder: str,
    after: datetime,
    until: datetime,
    expected: dict[str, tuple[datetime, ...]],
) -> _Holdings:
    """The rows held by the objects of one site folder that can hold rows in ``(after, until]``.

    A key is stamped with its payload's newest row, so objects stamped in the window are read
    (unless ``expected`` vouches for them) and, after the window, objects are read in key order
    until one holds nothing from the window (one read per site when payloads are single rows).
    """
    held = _Holdings()
    until_ms = keys.epoch_ms(until)
    for listed in store.list_from(folder, keys.start_after(folder, keys.epoch_ms(after))):
        held.listed += 1
        stamp = keys.key_time_ms(listed.key)
        if stamp is None:
            continue  # not an export key (a stray file): it holds no payload of ours
        known = expected.get(listed.key)
        if known is not None and listed.md5 is not None and listed.md5 == keys.key_md5(listed.key):
            times: tuple[datetime, ...] | None = known
        else:
            times = _read_rows(store, listed.key, held)
        if stamp <= until_ms:
            if times is not None:
                held.rows[listed.key] = times
            continue
        if times is None or min(times) > until:
            break
        held.rows[listed.key] = times
    return held


def _scan_site(
    table: catalogue.Table,
    site_id: str,
    day: date,
    source: CosmosSource,
    store: ObjectStore,
    watermark: datetime | None,
    batch_size: int,
    newest: dict[str, datetime],
    payload_format: payloads.PayloadFormat,
) -> _SiteScan:
    after, until = reconciliation.day_window(day)
    # The rows of every payload that holds rows of the day, cut as the export cuts them.
    rows = list(
        source.rows_after(table, site_id, *batch_window(after, until, batch_size, table.cadence))
    )
    batches = list(aligned_batches(rows, batch_size, table.cadence, newest))
    folder = keys.site_folder(store.prefix, site_id, table)
    held = scan_folder(
        store,
        folder,
        after,
        until,
        expected_objects(table, store.prefix, batches, payload_format),
    )
    report = reconciliation.compare_site(
        site_id,
        after,
        until,
        (row[catalogue.DATE_TIME] for row in rows),
        held.rows,
        watermark,
        held.unreadable,
    )
    missing = set(report.missing)
    heal: list[tuple[list[Row], int]] = []
    for batch in batches:
        # Whole, as the export sent it: a part of it would land on a key of its own, which a
        # replay of the day would then duplicate. A row stored twice in the source counts once.
        count = len({row[catalogue.DATE_TIME] for row in batch} & missing)
        if count:
            heal.append((batch, count))
    return _SiteScan(report, heal, held.listed, held.read)


def _heal(
    table: catalogue.Table,
    store: ObjectStore,
    batches: list[tuple[list[Row], int]],
    payload_format: payloads.PayloadFormat,
    log: logging.Logger | logging.LoggerAdapter,
) -> tuple[int, int]:
    """Store the payloads holding missing rows as the export would; (missing rows stored,
    objects that failed)."""
    sizes: dict[str, int] = {}

    def objects() -> Iterator[tuple[str, bytes]]:
        for batch, count in batches:
            key, body = build_object(table, store.prefix, batch, payload_format)
            sizes[key] = count
            yield key, body

    healed = failed = 0
    for result in store.put_many(objects()):
        if result.error is None:
            healed += sizes[result.key]
        else:
            failed += 1
            log.error(f"{table.name}: heal could not store {result.key}: {result.error}")
    return healed, failed


def reconcile_day(
    table: catalogue.Table,
    day: date,
    *,
    source: CosmosSource,
    store: ObjectStore,
    state: StateBackend | None = None,
    sites: Sequence[str] | None = None,
    batch_size: int = 1,
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
    heal: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> TableDay:
    """Reconcile one table on one UTC day, site by site; with ``heal``, store what is missing.

    ``sites``: the sites to check, matched to the stored IDs as the export matches them (a site
    without rows in the table is ``UnknownSiteError``); by default every catalogue site and every
    site with rows in the table, so objects of a site the source no longer has are found too.
    ``batch_size`` and ``payload_format`` are the export's: they predict its keys and make the
    healed payloads.
    """
    log = log or _log
    current = state.load(table) if state is not None else state_rules.empty_state()
    if sites is None:
        sites = sorted(set(catalogue.SITE_IDS) | set(source.list_sites(table)))
    else:  # as the export matches them: the IDs as stored, every one required to have rows
        sites = select_sites(table, source, sites, log, require_rows=True)
    result = TableDay(table=table, day=day)
    to_heal: list[tuple[list[Row], int]] = []
    # Whether a site's last payload is closed (sent by the export yet) depends on its newest row.
    newest = source.newest_times(table, sites) if batch_size > 1 else {}

    def scan(site_id: str) -> _SiteScan:
        watermark = state_rules.watermark(current, site_id)
        return _scan_site(
            table, site_id, day, source, store, watermark, batch_size, newest, payload_format
        )

    # Daemon workers, so a failed read (after the store's timeouts and retries) or ^C ends the
    # day at once: the sites not started are never started and stuck reads are not waited for.
    pool = DaemonPool(min(SITE_WORKERS, len(sites)) or 1, "reconcile")
    scans = [pool.submit(scan, site_id) for site_id in sites]
    try:
        for future in scans:
            scanned = future.result()
            result.sites.append(scanned.report)
            result.objects_listed += scanned.listed
            result.objects_read += scanned.read
            to_heal += scanned.heal
    finally:
        for future in scans:
            future.cancel()
        pool.shutdown(wait=False)
    if heal and to_heal:
        result.healed, result.heal_failed = _heal(table, store, to_heal, payload_format, log)
    log.info(describe(result))
    return result


def describe(result: TableDay) -> str:
    """One line for a log or a terminal."""
    c = result.counts()
    text = (
        f"{result.table.name} {result.day}: {c['rows']} rows, {c['found']} found, "
        f"{c['missing']} missing, {c['duplicated']} duplicated, {c['orphaned']} orphaned"
    )
    if c["pending"]:
        text += f", {c['pending']} pending (after the watermark)"
    if c["unreadable"]:
        text += f", {c['unreadable']} unreadable objects"
    if c["healed"] or c["heal_failed"]:
        text += f", {c['healed']} healed"
        if c["heal_failed"]:
            text += f" ({c['heal_failed']} objects FAILED)"
    return text + (" - complete" if result.complete else " - INCOMPLETE")


def first_faults(result: TableDay, limit: int = 3) -> str:
    """The first ``limit`` rows of each kind at fault, as site and time of day, then ``and N
    more``: enough for a one-line verdict to say where to look (``problems()`` has them all)."""
    counts = result.counts()
    kinds: tuple[tuple[str, Iterable[tuple[str, datetime]]], ...] = (
        ("missing", ((s.site_id, t) for s in result.sites for t in s.missing)),
        ("duplicated", ((s.site_id, t) for s in result.sites for t in s.duplicated)),
        (
            "orphaned",
            ((s.site_id, t) for s in result.sites for ts in s.orphaned.values() for t in ts),
        ),
    )
    parts = []
    for kind, faults in kinds:
        first = [f"{site} {when.time().isoformat()}" for site, when in islice(faults, limit)]
        if first:
            more = f" and {counts[kind] - limit} more" if counts[kind] > limit else ""
            parts.append(f"{kind} {', '.join(first)}{more}")
    return "; ".join(parts)
