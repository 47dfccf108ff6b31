"""One export run of one COSMOS table: new rows -> CR1000X payloads -> objects -> watermarks.

Every trigger (UI launch, sensor, schedule, backfill, the ``live-cosmos`` command line) ends up
here through the live asset, so this is the one place the run's rules live:

* a site starts at its watermark, or ``now - fallback_hours`` when the state has never seen it;
  a replay window (``since``/``until``) starts at ``since`` whatever the watermark says;
* rows stream oldest first into payloads of ``batch_size`` rows aligned to the table's cadence
  (``aligned_batches``: a re-sent payload is the same payload), and payloads stream into the
  object store's bounded upload pool, so a backlog of millions of rows never sits in memory;
* a site's watermark moves only over the stored prefix of its payloads (``watermarks``), is
  checkpointed while a long backlog drains, and never moves back;
* the table's state lock is held for the whole run, so two runs for one table never interleave.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from iotswarm_pipelines import payloads
from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import bad_rows, keys
from iotswarm_pipelines.export import sites as site_rules
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.store_errors import (
    StateLockedError,
    StatePartlySavedError,
    StoreUnavailableError,
)
from iotswarm_pipelines.export.watermarks import (
    Row,
    SiteProgress,
    aligned_batches,
    batch_window,
    newest_time,
    replay_may_advance,
)
from iotswarm_pipelines.file_options import DEFAULT_FALLBACK_HOURS, check_fallback_hours
from iotswarm_pipelines.s3 import describe_error

if TYPE_CHECKING:
    from iotswarm_pipelines.cosmos.source import CosmosSource
    from iotswarm_pipelines.export.object_store import ObjectStore
    from iotswarm_pipelines.export.state_backend import StateBackend

PROGRESS_LOGGER = "iotswarm_pipelines.export.progress"
"""Progress records (``extra``: table, rows, payloads, objects) go here; the CLI draws a bar."""

_progress = logging.getLogger(PROGRESS_LOGGER)
_module_log = logging.getLogger(__name__)

MAX_FALLBACK_HOURS = 24 * 365 * 50
"""Fifty years: more reaches before the first COSMOS row, so it means "every row" (warned)."""
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
    table: catalogue.Table
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
    site_lags: dict[str, float] = field(default_factory=dict)
    """Seconds each site's watermark trails its newest source row (``lag_seconds``: the most)."""
    dry_run: bool = False
    skipped_rows: list[str] = field(default_factory=list)
    """Rows left out because the operator listed them in ``skip_rows`` (``SITE@time``)."""


@dataclass
class _Payload:
    site_id: str
    seq: int
    newest: datetime


def fallback_warning(hours: float | None, now: datetime | None = None) -> str | None:
    """What a fallback beyond fifty years means, or None: the old tool's users write 1000000
    (or more) for "everything", which is accepted, clamped to the oldest time a row can hold."""
    if hours is None or not hours > MAX_FALLBACK_HOURS:
        return None
    shown = f"{hours:,.0f}" if hours < float("inf") else "inf"
    start = state_rules.fallback_start(now or utc_now(), hours)
    clamped = start == state_rules.OLDEST_ROW_TIME
    return (
        f"fallback_hours {shown} reaches back to {start:%Y-%m-%d}, before any COSMOS row: a site "
        "the state has never seen is sent from its first row (its whole history)"
        + (" (clamped to the oldest time a row can hold)" if clamped else "")
    )


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


def build_object(
    table: catalogue.Table,
    prefix: str,
    rows: Sequence[Row],
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
) -> tuple[str, bytes]:
    """(key, body) of one payload: the same text and key for the live and historical assets."""
    site_id = rows[0][catalogue.SITE_ID]
    payload = payloads.cr1000x_payload(site_id, rows, payload_format)
    text, md5 = payloads.payload_json_md5(payload)
    key = keys.object_key_for_md5(prefix, site_id, table, newest_time(rows), md5)
    return key, text.encode()


def build_objects(
    table: catalogue.Table,
    prefix: str,
    batches: Iterator[list[Row]],
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
) -> Iterator[tuple[str, bytes, list[Row]]]:
    """(key, body, rows) per payload (``build_object``)."""
    for rows in batches:
        yield *build_object(table, prefix, rows, payload_format), rows


class _Run:
    """Counters, per-site progress and periodic checkpoints of one export run."""

    def __init__(
        self,
        table: catalogue.Table,
        summary: ExportSummary,
        log: logging.Logger | logging.LoggerAdapter,
        checkpoint: Callable[[dict[str, datetime]], None],
        payload_format: payloads.PayloadFormat,
    ) -> None:
        self.table = table
        self.payload_format = payload_format
        self.summary = summary
        self.log = log
        self.checkpoint_fn = checkpoint
        self.sites: dict[str, SiteProgress] = {}
        self.may_advance: set[str] = set()
        self.in_flight: dict[str, list[_Payload]] = {}
        self.saved: dict[str, datetime] = {}
        self.skip: set[tuple[str, datetime]] = set()
        self.stopped: dict[str, bad_rows.StoppedSite] = {}  # sites stopped before a bad row
        self.held: dict[str, datetime] = {}  # sites read only up to the horizon: their newest
        self.horizon = datetime.max  # now plus the tolerance for future-dated rows
        self.store_down: str | None = None  # why uploads were stopped early
        self.causes: Counter[str] = Counter()  # why objects failed: the S3 code or errno name
        self.cause_text: dict[str, str] = {}  # the first full line of each cause
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
            if not error.startswith("not attempted"):  # after the store was taken as down
                cause = error.split(maxsplit=1)[0].rstrip(":")
                self.causes[cause] += 1
                self.cause_text.setdefault(cause, error)
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

    def stop(self, stopped: bad_rows.StoppedSite) -> None:
        if stopped.site_id not in self.stopped:
            self.stopped[stopped.site_id] = stopped
            self.log.error(f"{self.table.name}: {stopped}")

    def payloadable(self, batch: Sequence[Row]) -> list[Row] | None:
        """The batch without the rows ``skip_rows`` names; None when a bad row stops the site."""
        kept = []
        for row in batch:
            why = bad_rows.unpayloadable(row)
            if why is None:
                kept.append(row)
            elif (row[catalogue.SITE_ID], row[catalogue.DATE_TIME]) in self.skip:
                name = bad_rows.skip_key(row[catalogue.SITE_ID], row[catalogue.DATE_TIME])
                self.summary.skipped_rows.append(name)
                self.log.warning(f"{self.table.name}: skipped {name} as skip_rows asks ({why})")
            else:
                self.stop(bad_rows.at_row(row, why))
                return None
        return kept

    def site_rows(
        self,
        source: CosmosSource,
        site_id: str,
        after: datetime | None,
        until: datetime | None,
    ) -> Iterator[dict]:
        """One site's rows; a row the database cannot hand over stops this site only."""
        last = after
        try:
            for row in source.rows_after(self.table, site_id, after, until):
                if site_id in self.stopped:
                    return
                last = row[catalogue.DATE_TIME]
                yield row
        except (TypeError, ValueError) as exc:  # a driver's conversion, not a SourceError
            self.stop(bad_rows.unreadable(site_id, last, exc))

    def cause(self) -> str:
        """The commonest reason objects failed, as one line (its first occurrence)."""
        if not self.causes:
            return "no cause recorded"
        cause, count = self.causes.most_common(1)[0]
        others = self.summary.failed - count
        return self.cause_text[cause] + (f" (and {others} failed otherwise)" if others else "")

    def report(self) -> None:
        s = self.summary
        self.log.info(
            f"{self.table.name}: {s.rows_read} rows read, {s.payloads_built} payloads built, "
            f"{s.objects_stored} objects stored ({s.bytes_stored} bytes), {s.failed} failed"
        )


def export_table(
    table: catalogue.Table,
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
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
    skip_rows: Collection[str] = (),
    future_tolerance: timedelta = bad_rows.DEFAULT_FUTURE_TOLERANCE,
) -> ExportSummary:
    """Export the rows of ``table`` that are newer than each site's watermark (or a replay window).

    ``fallback_hours=None`` sends the whole history of a site the state has never seen.
    Raises ``ExportError`` after keeping the safe watermarks when any payload was not stored, or
    when a site stopped before a bad row or a row dated after ``now + future_tolerance`` (the
    other sites are exported); ``skip_rows`` (``SITE@time``) names bad rows to leave out.
    """
    log = log or _module_log
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if fallback_hours is not None:
        check_fallback_hours(fallback_hours)
    skip = bad_rows.parse_skip_rows(skip_rows)
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until}) must be later than since ({since})")
    now = now or utc_now()
    if warning := fallback_warning(fallback_hours, now):
        log.warning(warning)
    selected = select_sites(table, source, sites, log)
    if not dry_run:
        store.check()  # a missing bucket or refused credentials: one line before any upload
    # A dry run writes nothing, so it need not wait for a running export of the table.
    with nullcontext() if dry_run else _table_lock(state, table, log):
        return _export(
            table,
            source,
            store,
            state,
            selected,
            fallback_hours,
            batch_size,
            since,
            until,
            now,
            log,
            dry_run=dry_run,
            payload_format=payload_format,
            skip=skip,
            horizon=now + future_tolerance,
        )


@contextmanager
def _table_lock(
    state: StateBackend, table: catalogue.Table, log: logging.Logger | logging.LoggerAdapter
) -> Iterator[None]:
    """The table's state lock; when another export holds it, say whose before waiting, and
    how long the wait was once it ends (in the run's log, and on a command line's terminal)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(state.locked(table, timeout=0))
        except StateLockedError as exc:
            _notice(log, f"waiting for the lock of {table.name} held by {exc.holder or exc}")
            began = time.monotonic()
            stack.enter_context(state.locked(table))
            _notice(log, f"got the lock of {table.name} after {time.monotonic() - began:.0f} s")
        yield


def _notice(log: logging.Logger | logging.LoggerAdapter, message: str) -> None:
    """A warning for the run's log, also handed to the progress logger (``notice``), which a
    command line prints once on its terminal while it shows no log."""
    log.warning(message)
    _progress.info(message, extra={"notice": message})


def _export(
    spec: catalogue.Table,
    source: CosmosSource,
    store: ObjectStore,
    state: StateBackend,
    selected: list[str],
    fallback_hours: float | None,
    batch_size: int,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    log: logging.Logger | logging.LoggerAdapter,
    *,
    dry_run: bool,
    payload_format: payloads.PayloadFormat,
    skip: set[tuple[str, datetime]],
    horizon: datetime,
) -> ExportSummary:
    current = state.load(spec)
    before = {s: w for s in current["sites"] if (w := state_rules.watermark(current, s))}
    newest = source.newest_times(spec, selected)
    fallback = state_rules.fallback_start(now, fallback_hours)
    starts = {
        s: since if since is not None else state_rules.export_start(current, s, fallback)
        for s in selected
    }
    summary = ExportSummary(table=spec, sites=len(selected), dry_run=dry_run)

    def checkpoint(updates: dict[str, datetime]) -> None:
        nonlocal current
        current = _save(state, spec, current, updates)

    run = _Run(spec, summary, log, checkpoint, payload_format)
    run.skip = skip
    run.held = {s: newest[s] for s in selected if s in newest and newest[s] > horizon}
    run.horizon = horizon
    if run.held:
        log.error(f"{spec.name}: {bad_rows.future_rows(run.held, run.horizon)}")
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
    expected = expected_rows(spec.cadence, source.first_times_after(spec, pending), newest, until)
    log.info(f"{spec.name}: about {expected} rows to send")
    _progress.debug("expected", extra={"table": spec.name, "expected_rows": expected})

    def rows() -> Iterator[dict]:
        for site_id in selected:
            if not has_new(site_id):
                continue  # nothing new: no query
            end = until
            if site_id in run.held:  # rows from the future stay in the source
                end = horizon if until is None else min(until, horizon)
            yield from run.site_rows(source, site_id, starts[site_id], end)

    try:
        _ship(run, store, aligned_batches(rows(), batch_size, spec.cadence, newest), dry_run)
    finally:
        if not dry_run:
            # Keep whatever is safe even when the source or the store raised half way.
            _final_checkpoint(run, state)
    run.report()
    summary.watermarks = {
        s: w for s in selected if (w := state_rules.watermark(current, s)) is not None
    }
    summary.advanced = tuple(s for s, w in summary.watermarks.items() if w != before.get(s))
    summary.sites_advanced = len(summary.advanced)
    summary.site_lags = _site_lags(newest, summary.watermarks)
    summary.lag_seconds = max(summary.site_lags.values(), default=None)
    _raise_if_failed(run, store, "the watermarks cover only what was stored")
    _raise_if_stopped(run)
    return summary


def export_window(
    table: catalogue.Table,
    *,
    source: CosmosSource,
    store: ObjectStore,
    after: datetime,
    until: datetime,
    sites: Sequence[str] | None = None,
    batch_size: int = 1,
    dry_run: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
) -> ExportSummary:
    """Re-export every row with ``after < DATE_TIME <= until``, whatever the watermarks say.

    The state is neither read nor written: the live export owns the watermarks, and a re-sent
    payload lands on the key it had before, so nothing duplicates: with any ``batch_size`` the
    payloads are aligned to the table's cadence (``aligned_batches``), as the live run's are,
    and the window is widened to whole batches (``batch_window``): a batch that crosses its
    edges (7 half-hours across midnight) is re-sent whole, never cut into a new key.
    """
    log = log or _module_log
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    summary = ExportSummary(table=table, sites=0, dry_run=dry_run)
    run = _Run(table, summary, log, lambda updates: None, payload_format)
    site_ids: set[str] = set()
    selected = select_sites(table, source, sites, log)

    first, last = batch_window(after, until, batch_size, table.cadence)

    def rows() -> Iterator[dict]:
        for site_id in selected:
            for row in run.site_rows(source, site_id, first, last):
                site_ids.add(site_id)
                yield row

    log.info(f"{table.name}: re-exporting {after} .. {until}" + (", dry run" if dry_run else ""))
    newest = source.newest_times(table, selected)
    _ship(run, store, aligned_batches(rows(), batch_size, table.cadence, newest), dry_run)
    run.report()
    summary.sites = len(site_ids)
    _raise_if_failed(run, store, "run it again to re-send them")
    _raise_if_stopped(run)
    return summary


class StateNotSavedError(ExportError):
    """Objects were stored but their watermarks could not be saved: nothing is lost, and the
    next run re-sends those payloads to the keys they already have."""


def _final_checkpoint(run: _Run, state: StateBackend) -> None:
    try:
        run.checkpoint()
    except StatePartlySavedError as exc:  # main holds the new watermarks: say so, not "not saved"
        raise StateNotSavedError(
            f"{run.table.name}: {run.summary.objects_stored} objects stored; {exc}: the next run "
            "starts from the new watermarks; fix the state store "
            f"({state.describe(run.table)}) so that its next save is whole",
            run.summary,
        ) from exc
    except Exception as exc:
        raise StateNotSavedError(
            f"{run.table.name}: {run.summary.objects_stored} objects stored, watermark not saved "
            f"({describe_error(exc)}): the next run re-sends them to the same keys; fix the "
            f"state store ({state.describe(run.table)})",
            run.summary,
        ) from exc


def select_sites(
    spec: catalogue.Table,
    source: CosmosSource,
    sites: Sequence[str] | None,
    log: logging.Logger | logging.LoggerAdapter,
    *,
    require_rows: bool = False,
) -> list[str]:
    """The table's stored site IDs the run reads (``sites.select``), its warnings logged."""
    selection = site_rules.select(spec, sites, source.list_sites(spec), require_rows=require_rows)
    for warning in selection.warnings:
        log.warning(warning)
    return selection.site_ids


def _ship(run: _Run, store: ObjectStore, batches: Iterator[list[Row]], dry_run: bool) -> None:
    """Build each payload and stream it into the store's bounded upload pool.

    A store that fails upload after upload ends the stream early (``put_concurrently``); the
    run then fails with its cause, and the rows not sent wait for the next run.
    """

    def objects() -> Iterator[tuple[str, bytes]]:
        for rows in batches:
            batch: Sequence[Row] = rows
            if rows[0][catalogue.SITE_ID] in run.stopped:
                continue  # nothing after a bad row may be sent: the watermark would pass it
            try:
                key, body = build_object(run.table, store.prefix, rows, run.payload_format)
            except (TypeError, ValueError):
                kept = run.payloadable(rows)
                if not kept:
                    continue
                batch = kept
                key, body = build_object(run.table, store.prefix, batch, run.payload_format)
            run.built(len(batch))
            if not dry_run:  # nothing completes in a dry run, so nothing is tracked
                run.register(key, batch[0][catalogue.SITE_ID], newest_time(batch))
            yield key, body

    if dry_run:
        for _ in objects():
            pass
        return
    try:
        for result in store.put_many(objects()):
            run.completed(result.key, result.size, result.error)
    except StoreUnavailableError as exc:
        run.store_down = str(exc)


def _raise_if_failed(run: _Run, store: ObjectStore, consequence: str) -> None:
    summary = run.summary
    if summary.failed:
        raise ExportError(
            f"{summary.table.name}: {summary.failed} of {summary.payloads_built} payloads were not "
            f"stored after retries (to {store.describe()}): {run.cause()}; "
            + (f"{run.store_down}; " if run.store_down else "")
            + consequence,
            summary,
        )


def _raise_if_stopped(run: _Run) -> None:
    count = len(run.stopped.keys() | run.held.keys())
    if not count:
        return
    reasons = [str(stopped) for stopped in run.stopped.values()]
    if run.held:
        reasons.append(bad_rows.future_rows(run.held, run.horizon))
    if count < run.summary.sites:
        exported = "the other sites were exported"
    elif run.summary.objects_stored or run.summary.payloads_built:
        exported = "every site stopped; the rows before them were exported"
    else:
        exported = "no site was exported"
    raise ExportError(
        f"{run.table.name}: {count} site(s) stopped before rows they cannot send "
        f"({exported}): " + "; ".join(reasons),
        run.summary,
    )


def _save(
    state: StateBackend, table: catalogue.Table, current: dict, updates: dict[str, datetime]
) -> dict:
    """Write the new watermarks; the caller already holds the table's lock."""
    new = state_rules.advance(current, updates)
    state.save(table, new)
    return new


def _site_lags(newest: dict[str, datetime], watermarks: dict[str, datetime]) -> dict[str, float]:
    """How far each site's watermark trails the source's newest row, in seconds."""
    return {
        s: max(0.0, (newest[s] - w).total_seconds()) for s, w in watermarks.items() if s in newest
    }
