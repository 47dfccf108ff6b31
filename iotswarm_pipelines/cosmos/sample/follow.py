"""Follow mode: keep appending rows as (possibly accelerated) time passes.

Data time runs ``speed`` times faster than the clock, starting at ``start`` (default: where the
stored data ends), but never passes now: a faster speed catches up to now, then rows follow the
clock in real time. A row dated after now would stop every export at its future-row guard.
Each step writes every row that has ended by the current data minute, continuing after the
newest stored row of each (table, site), then waits for the next data minute. The rows are the
ones ``generate`` would write for the same range and seed. The clock and the sleep are
parameters (``now`` the wall clock) so tests can drive follow mode without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos.sample import physics as ph
from iotswarm_pipelines.cosmos.sample.generator import (
    SampleDatabase,
    SampleError,
    Selection,
    write_rows,
)

StepCallback = Callable[[datetime, dict[str, int]], None]


def follow(
    url: str,
    *,
    seed: int = 0,
    sites: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    speed: float = 1.0,
    start: datetime | None = None,
    until: datetime | None = None,
    max_rows: int | None = None,
    steps: int | None = None,
    stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = utc_now,
    on_step: StepCallback | None = None,
) -> dict[str, int]:
    """Append rows until a bound is reached or Ctrl-C; returns rows written per table.

    Stops after the step in which data time reaches ``until``, the total reaches ``max_rows``,
    ``steps`` steps have run, or ``stop()`` returns true; a KeyboardInterrupt ends it cleanly
    (rows of the interrupted step that were not committed are written by the next run).
    """
    if not speed > 0:
        raise SampleError(f"speed must be > 0 (times faster than real time), got {speed!r}")
    selection = Selection.of(sites, tables, seed)
    if (start is not None and start.tzinfo is not None) or (
        until is not None and until.tzinfo is not None
    ):
        raise SampleError("start and until must be naive UTC datetimes (drop the time zone)")
    totals = {t.name: 0 for t in selection.tables}
    with SampleDatabase(url, bulk=False) as db:
        db.prepare(selection.tables)
        newest = db.newest(selection)
        data_start = min(start or _data_end(newest, now()), now())
        after = ph.to_minutes(data_start)
        t0 = clock()
        step = 0

        def data_now() -> datetime:
            return data_start + timedelta(seconds=(clock() - t0) * speed)

        try:
            while True:
                target = ph.to_minutes(min(data_now(), now()))
                if until is not None:
                    target = min(target, ph.to_minutes(until))
                counts = write_rows(
                    db, selection, after=after, until=target, newest=newest, resume=True
                )
                for name, n in counts.items():
                    totals[name] += n
                step += 1
                if on_step is not None:
                    on_step(ph.from_minutes(target), counts)
                if (
                    (steps is not None and step >= steps)
                    or (max_rows is not None and sum(totals.values()) >= max_rows)
                    or (until is not None and target >= ph.to_minutes(until))
                    or (stop is not None and stop())
                ):
                    break
                next_minute = ph.from_minutes(target + 1)
                at_speed = (next_minute - data_now()).total_seconds() / speed
                sleep(max(at_speed, (next_minute - now()).total_seconds(), 0.0))
        except KeyboardInterrupt:
            pass
    return totals


def _data_end(newest: dict[tuple[str, str], int], now: datetime) -> datetime:
    """Where the stored rows end (the newest of all), or now for an empty database."""
    return ph.from_minutes(max(newest.values())) if newest else now
