"""Reconcile one COSMOS table with the object store, day by day, and heal the missing rows.

The rules live in ``reconciliation``; this module reads the source, the object store and the
watermarks for them. Per site and UTC day it:

* reads the site's rows of the day from the source (one index range scan);
* lists only the site's key folder from the day's first millisecond on (S3 ``StartAfter``, so the
  bucket is never walked), until the first object past the day whose rows are all later;
* reads only the objects it cannot vouch for without reading: a key that is exactly the one the
  export would have made for some of these rows, with a listed MD5 (S3's ETag) equal to the key's,
  holds exactly those rows, since the key ends with the MD5 of the stored text;
* heals: the missing rows go through the export's own payload and key code
  (``pipeline.build_objects``) into the store, so a heal repeated, or racing the live export,
  rewrites the same keys. The state is only read: a heal never moves a watermark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import keys, reconciliation
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.pipeline import build_objects
from iotswarm_pipelines.export.reconciliation import SiteDay, TableDay, UnreadablePayloadError
from iotswarm_pipelines.export.watermarks import batch_rows

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
    missing_rows: list[dict[str, Any]]
    listed: int
    read: int


@dataclass
class _Holdings:
    rows: dict[str, tuple[datetime, ...]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    listed: int = 0
    read: int = 0


def expected_objects(
    table: catalogue.Table, prefix: str, rows: Sequence[dict], batch_size: int
) -> dict[str, tuple[datetime, ...]]:
    """The keys the export makes for ``rows`` cut into ``batch_size`` payloads, with their rows."""
    return {
        key: tuple(row[catalogue.DATE_TIME] for row in batch)
        for key, _body, batch in build_objects(table, prefix, batch_rows(rows, batch_size))
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
        md5 = keys.key_md5(listed.key)
        if stamp <= until_ms:
            known = expected.get(listed.key)
            if known is not None and listed.md5 is not None and listed.md5 == md5:
                held.rows[listed.key] = known
            elif (times := _read_rows(store, listed.key, held)) is not None:
                held.rows[listed.key] = times
            continue
        times = _read_rows(store, listed.key, held)
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
) -> _SiteScan:
    after, until = reconciliation.day_window(day)
    rows = list(source.rows_after(table.name, site_id, after, until))
    folder = keys.site_folder(store.prefix, site_id, table.name)
    held = scan_folder(
        store, folder, after, until, expected_objects(table, store.prefix, rows, batch_size)
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
    heal: list[dict[str, Any]] = []
    for row in rows:
        if row[catalogue.DATE_TIME] in missing:
            missing.discard(row[catalogue.DATE_TIME])  # a row stored twice in the source: once
            heal.append(row)
    return _SiteScan(report, heal, held.listed, held.read)


def _heal(
    table: catalogue.Table,
    store: ObjectStore,
    rows: list[dict[str, Any]],
    batch_size: int,
    log: logging.Logger | logging.LoggerAdapter,
) -> tuple[int, int]:
    """Store the missing rows as the export would; (rows stored, objects that failed)."""
    sizes: dict[str, int] = {}

    def objects() -> Iterator[tuple[str, bytes]]:
        for key, body, batch in build_objects(table, store.prefix, batch_rows(rows, batch_size)):
            sizes[key] = len(batch)
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
    heal: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> TableDay:
    """Reconcile one table on one UTC day, site by site; with ``heal``, store what is missing.

    ``sites``: the sites to check; by default every catalogue site and every site with rows in
    the table, so objects of a site the source no longer has are found too. ``batch_size`` is
    the export's (it predicts the keys, and cuts the healed payloads).
    """
    log = log or _log
    current = state.load(table.name) if state is not None else state_rules.empty_state()
    if sites is None:
        sites = sorted(set(catalogue.SITE_IDS) | set(source.list_sites(table.name)))
    else:
        sites = sorted({site.strip().upper() for site in sites})
    result = TableDay(table=table.name, day=day)
    to_heal: list[dict[str, Any]] = []

    def scan(site_id: str) -> _SiteScan:
        watermark = state_rules.watermark(current, site_id)
        return _scan_site(table, site_id, day, source, store, watermark, batch_size)

    with ThreadPoolExecutor(SITE_WORKERS, thread_name_prefix="reconcile") as pool:
        for scanned in pool.map(scan, sites):
            result.sites.append(scanned.report)
            result.objects_listed += scanned.listed
            result.objects_read += scanned.read
            to_heal += scanned.missing_rows
    if heal and to_heal:
        result.healed, result.heal_failed = _heal(table, store, to_heal, batch_size, log)
    log.info(describe(result))
    return result


def describe(result: TableDay) -> str:
    """One line for a log or a terminal."""
    c = result.counts()
    text = (
        f"{result.table} {result.day}: {c['rows']} rows, {c['found']} found, "
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
