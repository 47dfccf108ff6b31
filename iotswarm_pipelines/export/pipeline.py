"""One export run of one COSMOS table: new rows -> CR1000X payloads -> objects -> watermarks.

Every trigger (UI launch, sensor, schedule, backfill, the ``live-cosmos`` command line) ends up
here through the live asset, so this is the one place the run's rules live:

* a site starts at its watermark, or ``now - fallback_hours`` when the state has never seen it;
  a replay window (``since``/``until``) starts at ``since`` whatever the watermark says;
* rows stream oldest first into payloads of ``batch_size`` rows, and payloads stream into the
  object store's bounded upload pool, so a backlog of millions of rows never sits in memory;
* a site's watermark moves only over the stored prefix of its payloads (``watermarks``), is
  checkpointed while a long backlog drains, and never moves back;
* the table's state lock is held for the whole run, so two runs for one table never interleave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import keys
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.watermarks import (
    Row,
    SiteProgress,
    batch_rows,
    newest_time,
    replay_may_advance,
)

if TYPE_CHECKING:
    from iotswarm_pipelines.cosmos.source import CosmosSource
    from iotswarm_pipelines.export.object_store import ObjectStore
    from iotswarm_pipelines.export.state_backend import StateBackend

PROGRESS_LOGGER = "iotswarm_pipelines.export.progress"
"""Progress records (``extra``: table, rows, payloads, objects) go here; the CLI draws a bar."""

_progress = logging.getLogger(PROGRESS_LOGGER)
_module_log = logging.getLogger(__name__)

DEFAULT_FALLBACK_HOURS = 3.0
CHECKPOINT_PAYLOADS = 2000
CHECKPOINT_SECONDS = 30.0
LOG_SECONDS = 10.0


class ExportError(RuntimeError):
    """Some payloads were not stored after retries; the safe part of the run was kept.

    ``summary`` holds the run's counts, so the asset can still report them (completeness check).
    """

    def __init__(self, message: str, summary: ExportSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class ExportSummary:
    table: str
    sites: int
    rows_read: int = 0
    payloads_built: int = 0
    objects_stored: int = 0
    bytes_stored: int = 0
    failed: int = 0
    sites_advanced: int = 0
    watermarks: dict[str, datetime] = field(default_factory=dict)
    advanced: tuple[str, ...] = ()
    """The sites whose watermark this run moved (a terminal prints only those)."""
    lag_seconds: float | None = None
    dry_run: bool = False


@dataclass
class _Payload:
    site_id: str
    seq: int
    newest: datetime


def expected_rows(
    cadence: timedelta,
    first: Mapping[str, datetime],
    newest: Mapping[str, datetime],
    until: datetime | None = None,
) -> int:
    """About how many rows a run will read: from each site's first row to send to its newest,
    in logging periods (an upper bound: outages leave gaps), for a progress bar's time left."""
    total = 0
    for site, start in first.items():
        end = min(newest.get(site, start), until) if until is not None else newest.get(site, start)
        if end >= start:
            total += int((end - start) / cadence) + 1
    return total


def utc_now() -> datetime:
    """Now as a naive GMT datetime, the project's convention (like Oracle DATE)."""
    return datetime.now(UTC).replace(tzinfo=None)


def build_objects(
    table: catalogue.Table, prefix: str, batches: Iterator[list[Row]]
) -> Iterator[tuple[str, bytes, list[Row]]]:
    """(key, body, rows) per payload: the same text and key for the live and historical assets."""
    for rows in batches:
        site_id = rows[0][catalogue.SITE_ID]
        text, md5 = payloads.payload_json_md5(payloads.cr1000x_payload(site_id, rows))
        key = keys.object_key_for_md5(prefix, site_id, table, newest_time(rows), md5)
        yield key, text.encode(), rows


class _Run:
    """Counters, per-site progress and periodic checkpoints of one export run."""

    def __init__(
        self,
        table: catalogue.Table,
        summary: ExportSummary,
        log: logging.Logger | logging.LoggerAdapter,
        checkpoint: Callable[[dict[str, datetime]], None],
    ) -> None:
        self.table = table
        self.summary = summary
        self.log = log
        self.checkpoint_fn = checkpoint
        self.sites: dict[str, SiteProgress] = {}
        self.may_advance: set[str] = set()
        self.in_flight: dict[str, list[_Payload]] = {}
        self.saved: dict[str, datetime] = {}
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.last_log = time.monotonic()

    def register(self, key: str, site_id: str, newest: datetime) -> None:
        progress = self.sites.setdefault(site_id, SiteProgress())
        # A re-read identical row makes an identical key; keep both so each is accounted for.
        self.in_flight.setdefault(key, []).append(_Payload(site_id, progress.sent(), newest))

    def completed(self, key: str, size: int, error: str | None) -> None:
        pending = self.in_flight[key]
        payload = pending.pop(0)
        if not pending:
            del self.in_flight[key]
        progress = self.sites[payload.site_id]
        if error is None:
            self.summary.objects_stored += 1
            self.summary.bytes_stored += size
            progress.stored(payload.seq, payload.newest)
        else:
            self.summary.failed += 1
            progress.failed_at(payload.seq)
            self.log.error(f"{self.table.name}: could not store {key}: {error}")
        self.since_checkpoint += 1
        if (
            self.since_checkpoint >= CHECKPOINT_PAYLOADS
            or time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS
        ):
            self.checkpoint()

    def built(self, rows: int) -> None:
        self.summary.rows_read += rows
        self.summary.payloads_built += 1
        _progress.debug("progress", extra={"table": self.table.name, "rows": rows, "payloads": 1})
        if time.monotonic() - self.last_log >= LOG_SECONDS:
            self.last_log = time.monotonic()
            self.report()

    def safe_updates(self) -> dict[str, datetime]:
        return {
            site_id: progress.watermark
            for site_id, progress in self.sites.items()
            if site_id in self.may_advance
            and progress.watermark is not None
            and self.saved.get(site_id) != progress.watermark
        }

    def checkpoint(self) -> None:
        updates = self.safe_updates()
        if updates:
            self.checkpoint_fn(updates)
            self.saved.update(updates)
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()

    def report(self) -> None:
        s = self.summary
        self.log.info(
            f"{self.table.name}: {s.rows_read} rows read, {s.payloads_built} payloads built, "
            f"{s.objects_stored} objects stored ({s.bytes_stored} bytes), {s.failed} failed"
        )


def export_table(
    table: str,
    *,
    source: CosmosSource,
    store: ObjectStore,
    state: StateBackend,
    sites: Sequence[str] | None = None,
    fallback_hours: float | None = DEFAULT_FALLBACK_HOURS,
    batch_size: int = 1,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> ExportSummary:
    """Export the rows of ``table`` that are newer than each site's watermark (or a replay window).

    ``fallback_hours=None`` sends the whole history of a site the state has never seen.
    Raises ``ExportError`` after keeping the safe watermarks when any payload was not stored.
    """
    spec = catalogue.get_table(table)
    log = log or _module_log
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until}) must be later than since ({since})")
    now = now or utc_now()
    # A dry run writes nothing, so it need not wait for a running export of the table.
    with nullcontext() if dry_run else state.locked(spec):
        return _export(
            spec,
            source,
            store,
            state,
            sites,
            fallback_hours,
            batch_size,
            since,
            until,
            now,
            log,
            dry_run=dry_run,
        )


def _export(
    spec: catalogue.Table,
    source: CosmosSource,
    store: ObjectStore,
    state: StateBackend,
    sites: Sequence[str] | None,
    fallback_hours: float | None,
    batch_size: int,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    log: logging.Logger | logging.LoggerAdapter,
    *,
    dry_run: bool,
) -> ExportSummary:
    current = state.load(spec)
    before = {s: w for s in current["sites"] if (w := state_rules.watermark(current, s))}
    newest = source.newest_times(spec, list(sites) if sites is not None else None)
    selected = sorted(sites) if sites is not None else sorted(newest)
    fallback = state_rules.fallback_start(now, fallback_hours)
    starts = {
        s: since if since is not None else state_rules.export_start(current, s, fallback)
        for s in selected
    }
    summary = ExportSummary(table=spec.name, sites=len(selected), dry_run=dry_run)

    def checkpoint(updates: dict[str, datetime]) -> None:
        nonlocal current
        current = _save(state, spec, current, updates)

    run = _Run(spec, summary, log, checkpoint)
    run.may_advance = {
        s for s in selected if since is None or replay_may_advance(before.get(s), since)
    }
    log.info(
        f"{spec.name}: {len(selected)} sites, "
        + (
            f"replay {since} .. {until or 'newest'}"
            if since
            else f"new sites from {fallback or 'their first row'}"
        )
        + (", dry run" if dry_run else "")
    )

    def has_new(site_id: str) -> bool:
        start = starts[site_id]
        return site_id in newest and (start is None or newest[site_id] > start)

    pending = {s: starts[s] for s in selected if has_new(s)}
    expected = expected_rows(
        spec.cadence, source.first_times_after(spec.name, pending), newest, until
    )
    log.info(f"{spec.name}: about {expected} rows to send")
    _progress.debug("expected", extra={"table": spec.name, "expected_rows": expected})

    def rows() -> Iterator[dict]:
        for site_id in selected:
            if has_new(site_id):  # else no query
                yield from source.rows_after(spec, site_id, starts[site_id], until)

    try:
        _ship(run, store, batch_rows(rows(), batch_size), dry_run)
    finally:
        if not dry_run:
            # Keep whatever is safe even when the source or the store raised half way.
            run.checkpoint()
    run.report()
    summary.watermarks = {
        s: w for s in selected if (w := state_rules.watermark(current, s)) is not None
    }
    summary.advanced = tuple(s for s, w in summary.watermarks.items() if w != before.get(s))
    summary.sites_advanced = len(summary.advanced)
    summary.lag_seconds = _lag(newest, summary.watermarks)
    _raise_if_failed(summary, store, "the watermarks cover only what was stored")
    return summary


def export_window(
    table: str,
    *,
    source: CosmosSource,
    store: ObjectStore,
    after: datetime,
    until: datetime,
    sites: Sequence[str] | None = None,
    batch_size: int = 1,
    dry_run: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> ExportSummary:
    """Re-export every row with ``after < DATE_TIME <= until``, whatever the watermarks say.

    The state is neither read nor written: the live export owns the watermarks, and a re-sent
    payload lands on the key it had before, so nothing duplicates. Batches start at ``after``,
    so with ``batch_size`` > 1 the grouping (and so the keys) can differ from the live run's.
    """
    spec = catalogue.get_table(table)
    log = log or _module_log
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    summary = ExportSummary(table=spec.name, sites=0, dry_run=dry_run)
    run = _Run(spec, summary, log, checkpoint=lambda updates: None)
    site_ids: set[str] = set()

    def rows() -> Iterator[dict]:
        for row in source.rows_between(spec, after, until, sites):
            site_ids.add(row[catalogue.SITE_ID])
            yield row

    log.info(f"{spec.name}: re-exporting {after} .. {until}" + (", dry run" if dry_run else ""))
    _ship(run, store, batch_rows(rows(), batch_size), dry_run)
    run.report()
    summary.sites = len(site_ids)
    _raise_if_failed(summary, store, "run it again to re-send them")
    return summary


def _ship(run: _Run, store: ObjectStore, batches: Iterator[list[Row]], dry_run: bool) -> None:
    """Build each payload and stream it into the store's bounded upload pool."""

    def objects() -> Iterator[tuple[str, bytes]]:
        for key, body, batch in build_objects(run.table, store.prefix, batches):
            run.built(len(batch))
            if not dry_run:  # nothing completes in a dry run, so nothing is tracked
                run.register(key, batch[0][catalogue.SITE_ID], newest_time(batch))
            yield key, body

    if dry_run:
        for _ in objects():
            pass
        return
    for result in store.put_many(objects()):
        run.completed(result.key, result.size, result.error)


def _raise_if_failed(summary: ExportSummary, store: ObjectStore, consequence: str) -> None:
    if summary.failed:
        raise ExportError(
            f"{summary.table}: {summary.failed} of {summary.payloads_built} payloads were not "
            f"stored after retries (to {store.describe()}); {consequence}",
            summary,
        )


def _save(
    state: StateBackend, table: catalogue.Table, current: dict, updates: dict[str, datetime]
) -> dict:
    """Write the new watermarks; the caller already holds the table's lock."""
    new = state_rules.advance(current, updates)
    state.save(table, new)
    return new


def _lag(newest: dict[str, datetime], watermarks: dict[str, datetime]) -> float | None:
    """How far the slowest site's watermark trails the source's newest row, in seconds."""
    lags = [max(0.0, (newest[s] - w).total_seconds()) for s, w in watermarks.items() if s in newest]
    return max(lags) if lags else None
