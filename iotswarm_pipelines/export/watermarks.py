"""Which rows go into which payload, and how far a site's watermark may move.

Pure rules, no I/O. Uploads finish in any order, so a site's watermark may only reach the newest
row of the longest run of its payloads that are all stored, counted from the first one: a gap
(a payload that failed, or is still in flight) stops it, and the next run starts from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from iotswarm_pipelines.cosmos.catalogue import DATE_TIME, SITE_ID

Row = Mapping[str, Any]


def batch_rows(rows: Iterable[Row], batch_size: int) -> Iterator[list[Row]]:
    """Group rows into payloads of at most ``batch_size`` rows; a new site starts a new payload.

    Rows must arrive grouped by site and oldest first (as ``rows_after``/``rows_between`` give
    them). Only one batch is held at a time, so a backlog of any size streams through.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[Row] = []
    for row in rows:
        if batch and (len(batch) == batch_size or row[SITE_ID] != batch[0][SITE_ID]):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


_EPOCH = datetime(1970, 1, 1)


def bucket_end(when: datetime, span: timedelta) -> datetime:
    """The end of the ``span``-long bucket holding ``when``, buckets aligned to the epoch.

    ``DATE_TIME`` ends its period, so a bucket holds (start, end]: a day of 48 half-hours is
    (00:00, 24:00], the same day the historical export re-sends.
    """
    return _EPOCH + ((when - _EPOCH - _TICK) // span + 1) * span


_TICK = timedelta(microseconds=1)


def batch_window(
    after: datetime, until: datetime, batch_size: int, cadence: timedelta
) -> tuple[datetime, datetime]:
    """``(after, until]`` widened to whole ``aligned_batches`` buckets: the rows needed to cut
    the payloads holding rows of the window exactly as the export cut them (a bucket may
    straddle the window's edges, e.g. 7 half-hours across midnight)."""
    if batch_size == 1:
        return after, until
    span = cadence * batch_size
    return bucket_end(after + _TICK, span) - span, bucket_end(until, span)


def aligned_batches(
    rows: Iterable[Row],
    batch_size: int,
    cadence: timedelta,
    newest: Mapping[str, datetime],
) -> Iterator[list[Row]]:
    """Payloads whose boundaries depend on the rows alone, so a re-sent payload is the same
    payload (same text, same key) whatever run sends it, after any crash.

    One row per payload for ``batch_size`` 1. Otherwise a payload is a site's rows in one
    bucket of ``batch_size`` periods of ``cadence``, aligned to the epoch, and it is sent only
    once the bucket is closed: it holds the row that ends it, or the site has a row after it
    (``newest``, the source's newest time per site). A still-open bucket is held back (its rows
    are not sent, so no watermark passes them) until a later run can send it whole.
    Rows must arrive grouped by site and oldest first.
    """
    if batch_size == 1:
        yield from batch_rows(rows, 1)
        return
    span = cadence * batch_size
    batch: list[Row] = []
    end: datetime | None = None

    def closed() -> bool:
        site = batch[0][SITE_ID]
        assert end is not None  # set with the batch's first row
        return newest_time(batch) >= end or (site in newest and newest[site] > end)

    for row in rows:
        row_end = bucket_end(row[DATE_TIME], span)
        if batch and (row[SITE_ID] != batch[0][SITE_ID] or row_end != end):
            if row[SITE_ID] == batch[0][SITE_ID] or closed():  # a later row of the site closes it
                yield batch
            batch = []
        batch.append(row)
        end = row_end
    if batch and closed():
        yield batch


def newest_time(rows: Sequence[Row]) -> datetime:
    """The payload's key timestamp: its newest ``DATE_TIME`` (rows need not be sorted)."""
    newest: datetime = max(row[DATE_TIME] for row in rows)
    return newest


def safe_watermark(payload_newest: Sequence[datetime], stored: Sequence[bool]) -> datetime | None:
    """The newest time covered by the stored prefix of a site's payloads, in their send order.

    ``None`` when the first payload is not stored: the site must not advance at all.
    """
    if len(payload_newest) != len(stored):
        raise ValueError("payload_newest and stored must have one entry per payload")
    newest: datetime | None = None
    for when, ok in zip(payload_newest, stored, strict=True):
        if not ok:
            break
        newest = when if newest is None else max(newest, when)
    return newest


def replay_may_advance(watermark: datetime | None, since: datetime) -> bool:
    """A replay window may move a watermark forward only if it starts at or before it.

    A window that starts later would leave the rows between the watermark and ``since``
    unexported for good once the watermark jumped over them.
    """
    return watermark is None or since <= watermark


class SiteProgress:
    """The stored prefix of one site's payloads while their uploads complete in any order.

    Memory stays bounded by the uploads in flight: completed payloads are folded into the
    watermark as soon as the prefix reaches them, and after a failure nothing later is kept,
    because nothing later can move the watermark in this run.
    """

    def __init__(self) -> None:
        self._sent = 0
        self._done = 0  # payloads 0.._done-1 are all stored
        self._finished: dict[int, datetime] = {}
        self._gap: int | None = None  # the earliest payload that failed
        self.watermark: datetime | None = None

    @property
    def failed(self) -> bool:
        return self._gap is not None

    def sent(self) -> int:
        """Register the next payload in send order; returns its sequence number."""
        self._sent += 1
        return self._sent - 1

    def stored(self, seq: int, newest: datetime) -> None:
        if self._gap is not None and seq > self._gap:
            return  # beyond a failed payload: can never count in this run
        self._finished[seq] = newest
        while self._done in self._finished:
            when = self._finished.pop(self._done)
            self.watermark = when if self.watermark is None else max(self.watermark, when)
            self._done += 1

    def failed_at(self, seq: int) -> None:
        if self._gap is None or seq < self._gap:
            self._gap = seq
            self._finished = {s: t for s, t in self._finished.items() if s < seq}
