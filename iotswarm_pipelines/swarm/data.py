"""What each swarm device sends and when: the data modes, the row sources and the payloads.

Modes:

- ``latest``: every cycle sends the site's newest row, a live mirror of the network. One query
  per shard refreshes all of the shard's sites at most once per ``sleep_time`` (at least once a
  second), so 20,000 clones of 51 sites cost the database one small query per cycle, not 20,000.
- ``loop``: walks the site's history oldest first and starts again at the end. History is read
  in chunks keyed by (site, time after which the chunk starts), kept in a small shared cache, so
  clones of one site that move in step read each chunk once and memory stays bounded.
- ``replay``: the same walk, but each message waits for the gap to the next message's
  ``DATE_TIME`` divided by ``speed`` (48x plays a day of 30-minute data in 30 minutes), and the
  device stops at the end of its history.

A device's position is the newest ``DATE_TIME`` the broker has acknowledged; resuming reads
rows after it, which stays right even when the history grew in between. Rows sent but not yet
acknowledged when a run died are sent again, in order, and counted (``resent``).

The CR1000X ``station_name`` is the site ID, as the reference rule says, also for clones: the
consumers read the site from it, and a payload head (148 typed fields for SOILMET) is then
built once per site and shared by all its clones instead of once per device (20,000 distinct
heads would not fit the payload module's cache and cost milliseconds each). Clones are told
apart by their topic and MQTT client ID, which carry the device ID.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.catalogue import ColumnType
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.swarm.devices import DevicePlan
from iotswarm_pipelines.swarm.mqtt.types import Message
from iotswarm_pipelines.swarm.options import COSMOS_SOURCE, DEVICE_TYPES, MODES, SwarmConfigError
from iotswarm_pipelines.swarm.sessions import DevicePosition

Mode = Literal["latest", "loop", "replay"]
DeviceType = Literal["cr1000x", "basic"]
CSV_DATE_FORMATS = ("%d-%b-%y %H.%M.%S", "%d-%b-%y")
MISSING_SENTINEL = -9999
DATE_TIME = catalogue.DATE_TIME
SITE_ID = catalogue.SITE_ID


class RowSource(Protocol):
    """Rows of one table, by site: the COSMOS database or a CSV export."""

    def sites(self) -> list[str]: ...

    def latest_rows(self, site_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def rows_after(
        self, site_id: str, after: datetime | None, limit: int
    ) -> list[dict[str, Any]]: ...


class CosmosRows:
    """A ``CosmosSource`` narrowed to one table."""

    def __init__(self, source: Any, table: catalogue.Table) -> None:
        self.source = source
        self.table = table

    def sites(self) -> list[str]:
        return self.source.list_sites(self.table)

    def latest_rows(self, site_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.source.latest_rows(self.table, list(site_ids))

    def rows_after(self, site_id: str, after: datetime | None, limit: int) -> list[dict[str, Any]]:
        stream = self.source.rows_after(self.table, site_id, after)
        try:
            return list(islice(stream, limit))
        finally:
            stream.close()  # releases the database cursor of a partly read stream


def _parse_times(column: pd.Series, path: Path) -> pd.Series:
    parsed = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns]")
    for fmt in CSV_DATE_FORMATS:
        parsed = parsed.fillna(pd.to_datetime(column, format=fmt, errors="coerce"))
    parsed = parsed.fillna(pd.to_datetime(column, format="ISO8601", errors="coerce"))
    bad = column[parsed.isna()]
    if len(bad):
        line = int(bad.index[0]) + 2  # 1-based, after the header line
        raise SwarmConfigError(
            f"{path}, line {line}: DATE_TIME {bad.iloc[0]!r} is not a date; expected "
            "01-JUN-24 00.30.00 (a COSMOS export) or ISO 8601 such as 2024-06-01T00:30:00"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


def _convert(value: Any, kind: ColumnType) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind is ColumnType.STRING:
        return str(value)
    number = float(value)
    if number == MISSING_SENTINEL or math.isnan(number):
        return None
    return int(number) if kind is ColumnType.INTEGER else number


def read_csv_rows(path: str | Path, table: catalogue.Table) -> list[dict[str, Any]]:
    """A CSV export of ``table`` as rows: NaN and -9999 become None, integer columns ints.

    Rows come sorted by site then time (stable, so rows sharing a time keep the file's order).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise SwarmConfigError(f"cannot read CSV source {path}: {exc}") from None
    frame.columns = [str(c).strip().upper() for c in frame.columns]
    unknown = [c for c in frame.columns if c not in table.column_names]
    missing = [c for c in (SITE_ID, DATE_TIME) if c not in frame.columns]
    if unknown or missing:
        problem = f"columns {unknown[:5]} are not in {table.name}" if unknown else ""
        problem = problem or f"it has no {' or '.join(missing)} column"
        raise SwarmConfigError(
            f"CSV source {path} does not fit table {table.name}: {problem}; pick the table the "
            "file was exported from"
        )
    times = _parse_times(frame[DATE_TIME], path)
    columns = [c for c in table.columns if c.name in frame.columns]
    values = {c.name: frame[c.name].tolist() for c in columns if c.name != DATE_TIME}
    rows = []
    for k, when in enumerate(times.dt.to_pydatetime()):
        rows.append(
            {
                c.name: when if c.name == DATE_TIME else _convert(values[c.name][k], c.type)
                for c in columns
            }
        )
    rows.sort(key=lambda r: (r[SITE_ID], r[DATE_TIME]))
    return rows


class CsvRows:
    """A CSV export held in memory (exports are small next to the database)."""

    def __init__(self, path: str | Path, table: catalogue.Table) -> None:
        self.path = Path(path)
        self._rows: dict[str, list[dict[str, Any]]] = {}
        for row in read_csv_rows(path, table):
            self._rows.setdefault(row[SITE_ID], []).append(row)
        self._times = {s: [r[DATE_TIME] for r in rows] for s, rows in self._rows.items()}

    def sites(self) -> list[str]:
        return sorted(self._rows)

    def latest_rows(self, site_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {s: self._rows[s][-1] for s in site_ids if s in self._rows}

    def rows_after(self, site_id: str, after: datetime | None, limit: int) -> list[dict[str, Any]]:
        rows = self._rows.get(site_id, [])
        start = 0 if after is None else bisect.bisect_right(self._times[site_id], after)
        return rows[start : start + limit]


Encoder = Callable[[str, Sequence[Mapping[str, Any]]], bytes]


def encoder(
    device_type: str, payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT
) -> Encoder:
    """Bytes of one message from a station's rows; ``basic`` with several rows is a JSON list."""
    if device_type == "cr1000x":
        return lambda station, rows: payloads.payload_json(
            payloads.cr1000x_payload(station, rows, payload_format)
        ).encode()
    if device_type == "basic":
        strict = payload_format.strict_json

        def basic(station: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
            if len(rows) == 1:
                body = payloads.basic_payload(rows[0], strict_json=strict)
                return payloads.payload_json(body).encode()
            return json.dumps(
                [payloads.basic_payload(r, strict_json=strict) for r in rows]
            ).encode()

        return basic
    raise SwarmConfigError(f"device_type {device_type!r} is unknown: use one of {DEVICE_TYPES}")


class PayloadMemo:
    """Bytes of recently sent (station, rows), so clones of a site and laps of a loop reuse them.

    Building a SOILMET payload costs more than publishing it (about 180 us against 30 us), and
    the clones of a site send the same rows as the same bytes (the station name is the site).
    Rows are matched by identity, not value: the row caches hand out the same row objects until
    they refresh, and a row read again (possibly changed) is simply encoded again. Entries keep
    their rows alive, so an identity is never reused while it is a key; least recently used
    entries go once their bytes pass ``budget``.
    """

    def __init__(self, encode: Encoder, budget: int = 32 << 20) -> None:
        self._encode = encode
        self._budget = budget
        self._size = 0
        self._entries: OrderedDict[tuple, tuple[Sequence[Mapping[str, Any]], bytes]] = OrderedDict()

    def __call__(self, station: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
        key = (station, *map(id, rows))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[1]
        payload = self._encode(station, rows)
        self._entries[key] = (rows, payload)
        self._size += len(payload)
        while self._size > self._budget and self._entries:
            self._size -= len(self._entries.popitem(last=False)[1][1])
        return payload


class LatestCache:
    """The shard's sites' newest rows, refreshed by one query at most every ``refresh_seconds``."""

    def __init__(self, source: RowSource, site_ids: Sequence[str], refresh_seconds: float):
        self.source = source
        self.site_ids = sorted(set(site_ids))
        self.refresh_seconds = max(refresh_seconds, 1.0)
        self.queries = 0
        self._rows: dict[str, dict[str, Any]] = {}
        self._due = 0.0

    def get(self, site_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        if now >= self._due:
            self._rows = self.source.latest_rows(self.site_ids)
            self.queries += 1
            self._due = now + self.refresh_seconds
        return self._rows.get(site_id)


class HistoryCache:
    """Chunks of site history keyed by (site, start-after time), least recently used dropped."""

    def __init__(self, source: RowSource, chunk_rows: int = 250, max_chunks: int = 64):
        self.source = source
        self.chunk_rows = chunk_rows
        self.max_chunks = max_chunks
        self.queries = 0
        self._chunks: OrderedDict[tuple[str, datetime | None], list[dict[str, Any]]] = OrderedDict()

    def chunk(self, site_id: str, after: datetime | None) -> list[dict[str, Any]]:
        key = (site_id, after)
        rows = self._chunks.get(key)
        if rows is None:
            rows = self.source.rows_after(site_id, after, self.chunk_rows)
            self.queries += 1
            self._chunks[key] = rows
            while len(self._chunks) > self.max_chunks:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(key)
        return rows


class DeviceStreamBase:
    """One device: its ID, topic and position; subclasses decide the rows of each message."""

    def __init__(self, plan: DevicePlan, encode: Encoder, position: DevicePosition | None):
        self.device_id = plan.device_id
        self.site_id = plan.site_id
        self.topic = plan.topic
        self._encode = encode
        start = position or DevicePosition()
        self.last_time: datetime | None = start.last_time  # the newest row sent
        self.cycles = start.cycles
        self.last_row: Mapping[str, Any] | None = None  # the program's Public variables
        self.acknowledged: tuple[datetime | None, int] = (start.last_time, start.cycles)
        self.resent = 0  # rows sent again: sent by a run that died before their acknowledgement
        self._resend_until = start.sent_time
        acked, sent = start.last_time, start.sent_time
        if sent is not None and acked is not None and sent <= acked:  # all acknowledged
            self._resend_until = None

    @property
    def position(self) -> DevicePosition:
        """Where a resumed run carries on: the newest acknowledged row (and the newest sent)."""
        last_time, cycles = self.acknowledged
        return DevicePosition(last_time, cycles, time.time(), self.last_time)

    def next_message(self, rows: int | None = None) -> Message | None:
        raise NotImplementedError

    def _message(self, rows: Sequence[Mapping[str, Any]], wait_after: float) -> Message:
        self.last_time = rows[-1][DATE_TIME]
        self.last_row = rows[-1]
        self.cycles += 1
        if self._resend_until is not None:
            until = self._resend_until
            self.resent += sum(1 for row in rows if row[DATE_TIME] <= until)
            if self.last_time >= until:
                self._resend_until = None
        mark = (self.last_time, self.cycles)  # handed back when the broker acknowledges it
        return Message(self._encode(self.site_id, rows), wait_after, mark)


class LatestStream(DeviceStreamBase):
    def __init__(self, plan, encode, position, cache: LatestCache, sleep_time: float):
        super().__init__(plan, encode, position)
        self._resend_until = None  # each cycle sends the newest row: nothing is owed again
        self._cache = cache
        self._sleep_time = sleep_time

    def next_message(self, rows: int | None = None) -> Message | None:
        row = self._cache.get(self.site_id)
        return None if row is None else self._message([row], self._sleep_time)


class HistoryStream(DeviceStreamBase):
    """``loop`` (wraps, fixed ``sleep_time``) or ``replay`` (stops, waits follow timestamps)."""

    def __init__(
        self,
        plan: DevicePlan,
        encode: Encoder,
        position: DevicePosition | None,
        cache: HistoryCache,
        *,
        mode: str,
        rows_per_message: int,
        sleep_time: float,
        speed: float,
        history_start: datetime | None,
    ):
        super().__init__(plan, encode, position)
        self._cache = cache
        self._mode = mode
        self._rows_per_message = rows_per_message
        self._sleep_time = sleep_time
        self._speed = speed
        self._history_start = history_start
        self._after = self.last_time or history_start
        self._offset = 0
        self._pending = self._take() if mode == "replay" else None

    def _take(self, count: int | None = None) -> list[dict[str, Any]]:
        """The next batch (``rows_per_message`` rows unless ``count`` says otherwise); a batch
        never spans the wrap from the end back to the start."""
        count = count or self._rows_per_message
        batch: list[dict[str, Any]] = []
        wrapped = False
        while len(batch) < count:
            chunk = self._cache.chunk(self.site_id, self._after)
            if self._offset < len(chunk):
                take = chunk[self._offset : self._offset + count - len(batch)]
                batch.extend(take)
                self._offset += len(take)
                continue
            if len(chunk) == self._cache.chunk_rows:  # a full chunk: more may follow
                self._after, self._offset = chunk[-1][DATE_TIME], 0
                continue
            if self._mode == "replay" or batch or wrapped:
                break  # end of history (or an empty site): stop, or send what we have
            self._after, self._offset, wrapped = self._history_start, 0, True
        return batch

    def next_message(self, rows: int | None = None) -> Message | None:
        """``rows`` (loop mode: a backlog upload) joins that many rows into the message."""
        if self._mode == "loop":
            batch = self._take(rows)
            return self._message(batch, self._sleep_time) if batch else None
        pending, self._pending = self._pending, None
        if not pending:
            return None
        batch = pending
        self._pending = self._take()
        wait = 0.0
        if self._pending:
            gap = self._pending[-1][DATE_TIME] - batch[-1][DATE_TIME]
            wait = max(gap.total_seconds(), 0.0) / self._speed
        return self._message(batch, wait)


def build_streams(
    plans: Sequence[DevicePlan],
    source: RowSource,
    *,
    mode: str,
    device_type: str,
    rows_per_message: int = 1,
    sleep_time: float = 0.0,
    speed: float = 1.0,
    positions: Mapping[str, DevicePosition] | None = None,
    history_start: datetime | None = None,
    chunk_rows: int = 250,
    payload_format: payloads.PayloadFormat = payloads.DEFAULT_FORMAT,
) -> list[DeviceStreamBase]:
    """A shard's device streams, sharing one cache per shard.

    Clones of a site move in step (a skipped cycle still consumes its message), so two chunks
    per site are enough to keep; a chunk of 250 SOILMET rows is about 2 MB.
    """
    encode = PayloadMemo(encoder(device_type, payload_format))
    positions = positions or {}
    if mode == "latest":
        cache = LatestCache(source, [p.site_id for p in plans], sleep_time)
        return [
            LatestStream(p, encode, positions.get(p.device_id), cache, sleep_time) for p in plans
        ]
    if mode not in MODES:
        raise SwarmConfigError(f"mode {mode!r} is unknown: use one of {MODES}")
    sites = {p.site_id for p in plans}
    history = HistoryCache(source, chunk_rows=chunk_rows, max_chunks=2 * len(sites) + 8)
    return [
        HistoryStream(
            p,
            encode,
            positions.get(p.device_id),
            history,
            mode=mode,
            rows_per_message=rows_per_message,
            sleep_time=sleep_time,
            speed=speed,
            history_start=history_start,
        )
        for p in plans
    ]


def rows_between(
    source: RowSource, site_id: str, start: datetime, end: datetime, chunk_rows: int = 1000
) -> list[dict[str, Any]]:
    """The site's rows with ``start <= DATE_TIME <= end``, oldest first, each once."""
    rows: list[dict[str, Any]] = []
    after = start - timedelta(microseconds=1)
    while after < end:
        chunk = source.rows_after(site_id, after, chunk_rows)
        rows.extend(r for r in chunk if r[DATE_TIME] <= end)
        if len(chunk) < chunk_rows or chunk[-1][DATE_TIME] >= end:
            break
        after = chunk[-1][DATE_TIME]
    return rows


def open_rows(source: str, table: catalogue.Table, cosmos: Any) -> RowSource:
    """The rows the devices send: the COSMOS source resource or a CSV export."""
    if source == COSMOS_SOURCE:
        return CosmosRows(cosmos, table)
    return CsvRows(source, table)


def check_source(source: str, table: catalogue.Table, cosmos: Any) -> RowSource:
    """Open and probe the data source, turning its errors into one ``SwarmConfigError`` line."""
    if source != COSMOS_SOURCE and not Path(source).is_file():
        raise SwarmConfigError(f"source {source!r} is neither 'cosmos' nor a readable CSV file")
    try:
        if source == COSMOS_SOURCE:
            cosmos.check([table])
        return open_rows(source, table, cosmos)
    except SourceError as exc:
        raise SwarmConfigError(first_line(exc)) from None
