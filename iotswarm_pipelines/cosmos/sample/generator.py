"""Writing the synthetic COSMOS database: tables from ``schema``, rows in bulk, never twice.

Re-running never duplicates: for every (table, site) the generator writes only rows newer than
the newest row already stored, so a second run over the same range adds nothing, and a run with
a later ``end`` appends exactly the rows that are missing at the end. Rows are never back-filled
before the newest stored row.

SQLite gets ``executemany`` on the raw DBAPI connection in WAL mode (readers keep reading while
follow mode writes) with ``synchronous=OFF`` on the loading connection; PostgreSQL gets ``COPY``.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from iotswarm_pipelines.clock import utc_now
from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.sample import physics as ph
from iotswarm_pipelines.cosmos.sample.tables import Block, block, column_values, has_table
from iotswarm_pipelines.errors import first_line

FLUSH_ROWS = 50_000
DAYS_PER_TASK = 16  # one task per site for most ranges, so a worker computes each look-back once
_EPOCH64 = np.datetime64(ph.EPOCH, "m")
_TIMES_OF_DAY = [f"{m // 60:02d}:{m % 60:02d}:00.000000" for m in range(ph.MINUTES_PER_DAY)]


class SampleError(ValueError):
    """Bad input for the generator: one line that says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Selection:
    """Validated sites, tables and seed of one generator run."""

    sites: tuple[str, ...]
    tables: tuple[catalogue.Table, ...]
    seed: int

    @classmethod
    def of(cls, sites: Sequence[str] | None, tables: Sequence[str] | None, seed: int) -> Selection:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SampleError(f"seed must be a whole number >= 0, got {seed!r}")
        if (sites is not None and len(sites) == 0) or (tables is not None and len(tables) == 0):
            raise SampleError("no sites or no tables given: name at least one, or leave it out")
        try:
            wanted_sites = {catalogue.get_site(s).site_id for s in (sites or catalogue.SITE_IDS)}
            wanted_tables = {catalogue.get_table(t).name for t in (tables or catalogue.TABLE_NAMES)}
        except (catalogue.UnknownSiteError, catalogue.UnknownTableError) as exc:
            raise SampleError(str(exc)) from None
        return cls(
            sites=tuple(s for s in catalogue.SITE_IDS if s in wanted_sites),
            tables=tuple(t for t in catalogue.TABLES.values() if t.name in wanted_tables),
            seed=seed,
        )


def _check_time(name: str, value: datetime) -> int:
    if not isinstance(value, datetime):
        raise SampleError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is not None:
        raise SampleError(f"{name} {value.isoformat()} must be naive UTC (drop the time zone)")
    return ph.to_minutes(value)


class SampleDatabase:
    """The one place the generator talks to a database: schema, newest rows, bulk inserts."""

    def __init__(self, url: str, *, bulk: bool = True) -> None:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise SampleError(
                "cannot parse the database URL: use e.g. sqlite:///path/cosmos.sqlite "
                "or postgresql+psycopg://user@host/db"
            ) from None
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(parsed)
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except (sa.exc.NoSuchModuleError, ImportError):
            raise SampleError(
                f"unsupported database URL {self.safe_url}: use sqlite:/// or postgresql+psycopg://"
            ) from None
        except sa.exc.DBAPIError as exc:
            raise SampleError(f"cannot connect to {self.safe_url}: {_first_line(exc)}") from None
        self._bulk = bulk
        self._raw: Any = None

    def __enter__(self) -> SampleDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.engine.dispose()

    def prepare(self, tables: Sequence[catalogue.Table]) -> None:
        """Create missing tables (with their SITE_ID, DATE_TIME index) and fill SITES."""
        try:
            with self.engine.begin() as conn:
                if self.is_sqlite:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                schema.metadata.create_all(
                    conn, tables=[schema.SITES, *(schema.TABLES[t.name] for t in tables)]
                )
                present = set(conn.execute(sa.select(schema.SITES.c.SITE_ID)).scalars())
                missing = [
                    {
                        "SITE_ID": s.site_id,
                        "SITE_NAME": s.name,
                        "LATITUDE": s.latitude,
                        "LONGITUDE": s.longitude,
                        "START_DATE": s.start,
                        "END_DATE": s.end,
                    }
                    for s in catalogue.SITES
                    if s.site_id not in present
                ]
                if missing:
                    conn.execute(schema.SITES.insert(), missing)
        except sa.exc.DBAPIError as exc:
            raise SampleError(
                f"cannot create tables in {self.safe_url}: {_first_line(exc)}"
            ) from None

    def newest(self, selection: Selection) -> dict[tuple[str, str], int]:
        """Newest stored period end (minutes) per (table, site).

        One MAX probe of the (SITE_ID, DATE_TIME) index per site, not a GROUP BY that would
        read the whole index of a 1-minute table.
        """
        out: dict[tuple[str, str], int] = {}
        with self.engine.connect() as conn:
            for table in selection.tables:
                t = schema.TABLES[table.name]
                site: sa.BindParameter[str] = sa.bindparam("site")
                query = sa.select(sa.func.max(t.c.DATE_TIME)).where(
                    t.columns[catalogue.SITE_ID] == site
                )
                for site_id in selection.sites:
                    newest = conn.execute(query, {"site": site_id}).scalar()
                    if newest is not None:
                        out[(table.name, site_id)] = ph.to_minutes(newest)
        return out

    def time_values(self, minutes: np.ndarray) -> list[Any]:
        """DATE_TIME values as the driver stores them (SQLite: SQLAlchemy's text format)."""
        if not self.is_sqlite:
            return (_EPOCH64 + minutes).astype("datetime64[us]").tolist()
        days = minutes // ph.MINUTES_PER_DAY
        first = int(days[0])
        dates = [
            f"{d} "
            for d in np.datetime_as_string(
                _EPOCH64 + np.arange(first, int(days[-1]) + 1) * 1440, unit="D"
            )
        ]
        return [dates[m // 1440 - first] + _TIMES_OF_DAY[m % 1440] for m in minutes.tolist()]

    def insert(self, table: catalogue.Table, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        t = schema.TABLES[table.name]
        dialect = self.engine.dialect
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            if self.is_sqlite:
                mode = "OFF" if self._bulk else "NORMAL"
                self._raw.cursor().execute(f"PRAGMA synchronous={mode}")
        if self.is_sqlite:
            cursor = self._raw.cursor()
            cursor.executemany(str(t.insert().compile(dialect=dialect)), rows)
            cursor.close()
        elif dialect.name == "postgresql" and dialect.driver == "psycopg":
            quote = dialect.identifier_preparer
            columns = ", ".join(quote.quote(c.name) for c in t.columns)
            copy_sql = f"COPY {quote.format_table(t)} ({columns}) FROM STDIN"
            with self._raw.driver_connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self._raw.cursor().executemany(
                str(t.insert().compile(dialect=dialect)),
                [dict(zip(table.column_names, row, strict=True)) for row in rows],
            )
        self._raw.commit()


def _first_line(exc: sa.exc.DBAPIError) -> str:
    """The driver's own line, without SQLAlchemy's wrapping."""
    return first_line(exc.orig if exc.orig is not None else exc)


@dataclass(frozen=True)
class _Task:
    """Consecutive days of one site, with the tables each day needs: one unit of worker work."""

    seed: int
    site_id: str
    days: tuple[tuple[int, tuple[str, ...]], ...]


def _compute(task: _Task) -> list[dict[str, Block]]:
    return [{n: block(task.seed, n, task.site_id, day) for n in names} for day, names in task.days]


def _plan(selection: Selection, lows: dict[tuple[str, str], int], until: int) -> list[_Task]:
    """Which (site, day, table) blocks hold rows in (low, until]; days grouped per site."""
    tasks = []
    for site_id in selection.sites:
        site = catalogue.SITES_BY_ID[site_id]
        open_from = ph.to_minutes(site.start)
        open_until = ph.to_minutes(site.end) if site.end is not None else until
        site_lows = {t.name: lows[(t.name, site_id)] for t in selection.tables}
        days = []
        first_day = min(site_lows.values()) // ph.MINUTES_PER_DAY
        for day in range(first_day, (until - 1) // ph.MINUTES_PER_DAY + 1):
            day_start, day_end = day * ph.MINUTES_PER_DAY, (day + 1) * ph.MINUTES_PER_DAY
            if day_end <= open_from or day_start >= min(open_until, until):
                continue
            names = tuple(
                name
                for name, low in site_lows.items()
                if day_end > low and has_table(site_id, name)
            )
            if names:
                days.append((day, names))
        for i in range(0, len(days), DAYS_PER_TASK):
            tasks.append(_Task(selection.seed, site_id, tuple(days[i : i + DAYS_PER_TASK])))
    return tasks


def _computed(tasks: list[_Task], workers: int) -> Iterator[list[dict[str, Block]]]:
    """Blocks of each task, in task order; worker processes compute ahead, bounded."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(_compute, tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future[list[dict[str, Block]]]] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(_compute, task))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)


def write_rows(
    db: SampleDatabase,
    selection: Selection,
    *,
    after: int,
    until: int,
    newest: dict[tuple[str, str], int],
    resume: bool = False,
    workers: int = 1,
    bar: tqdm | None = None,
) -> dict[str, int]:
    """Write rows with after < DATE_TIME <= until (minutes) that are newer than ``newest``.

    With ``resume`` a (table, site) that has rows continues right after its newest row even if
    that is before ``after`` (follow mode); ``after`` then only starts the empty ones.
    ``newest`` is updated in place, so follow mode can call this again and again without
    asking the database. Work goes site by site and a few days at a time (in ``workers``
    processes when more than one), so memory stays bounded and the weather of a day is computed
    once for all of its tables; rows are inserted in the same order either way.
    """
    lows = {}
    for table in selection.tables:
        for site_id in selection.sites:
            stored = newest.get((table.name, site_id), after)
            lows[(table.name, site_id)] = stored if resume else max(after, stored)
    tasks = _plan(selection, lows, until)
    if bar is not None:
        bar.reset(total=sum(len(t.days) for t in tasks))
    counts = {t.name: 0 for t in selection.tables}
    buffers: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in selection.tables}
    for task, day_blocks in zip(tasks, _computed(tasks, workers), strict=True):
        site_id = task.site_id
        for blocks in day_blocks:
            for table in selection.tables:
                b = blocks.get(table.name)
                if b is None:
                    continue
                span = b.span(lows[(table.name, site_id)], until)
                if span.stop > span.start:
                    rows = _rows(db, b, span, site_id, table)
                    buffers[table.name].extend(rows)
                    counts[table.name] += len(rows)
                    newest[(table.name, site_id)] = int(b.minutes[span.stop - 1])
                if len(buffers[table.name]) >= FLUSH_ROWS:
                    db.insert(table, buffers[table.name])
                    buffers[table.name] = []
        if bar is not None:
            bar.update(len(task.days))
            bar.set_postfix(rows=sum(counts.values()), site=site_id, refresh=False)
    for table in selection.tables:
        db.insert(table, buffers[table.name])
    return counts


def _rows(
    db: SampleDatabase, b: Block, span: slice, site_id: str, table: catalogue.Table
) -> list[tuple[Any, ...]]:
    n = span.stop - span.start
    integers = table.integer_columns
    columns = [[site_id] * n, db.time_values(b.minutes[span])]
    columns += [
        column_values(value, span, n, name in integers)
        for name, value in zip(table.column_names[2:], b.columns, strict=True)
    ]
    return list(zip(*columns, strict=True))


def generate(
    url: str,
    *,
    start: datetime,
    end: datetime,
    sites: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, int]:
    """Write the sample rows with start < DATE_TIME <= end; returns rows written per table.

    The same seed and arguments always give the same rows, whatever the chunking, the number
    of ``workers`` and whichever other sites are selected. Rows already stored are kept and
    never duplicated. ``workers`` > 1 computes days in that many forked processes: faster on an
    idle machine, but only for callers that run no threads of their own (forking a threaded
    process can deadlock), so it is opt-in.
    """
    after, until = _check_time("start", start), _check_time("end", end)
    if until <= after:
        raise SampleError(f"end {end} is not after start {start}: give an end later than start")
    selection = Selection.of(sites, tables, seed)
    with SampleDatabase(url) as db:
        db.prepare(selection.tables)
        newest = db.newest(selection)
        with tqdm(unit="site-day", disable=not progress, desc="cosmos-sample") as bar:
            return write_rows(
                db, selection, after=after, until=until, newest=newest, workers=workers, bar=bar
            )


def summarise(url: str) -> str:
    """Rows, sites and time range per table: what the demo prints after generating."""
    with SampleDatabase(url) as db, db.engine.connect() as conn:
        inspector = sa.inspect(conn)
        lines = [f"sample COSMOS database {db.safe_url}"]
        total = 0
        for name, t in schema.TABLES.items():
            if not inspector.has_table(name):
                lines.append(f"  {name:<26} (no table)")
                continue
            rows, sites, first, last = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(sa.distinct(t.c.SITE_ID)),
                    sa.func.min(t.c.DATE_TIME),
                    sa.func.max(t.c.DATE_TIME),
                )
            ).one()
            total += rows
            span = f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}" if rows else "-"
            lines.append(f"  {name:<26} {rows:>10,} rows {sites:>3} sites  {span}")
        lines.append(f"  {'total':<26} {total:>10,} rows")
    return "\n".join(lines)


def floor_to_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def default_range(days: float = 2.0, *, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last ``days`` up to the current hour (UTC): the CLI's default range."""
    end = floor_to_hour(now or utc_now())
    return end - timedelta(days=days), end
