"""The COSMOS source: the only place that reads the COSMOS database (Oracle, PostgreSQL or SQLite).

Reads are short index probes or per-site streams (see ``queries``). Transient database failures
(a dropped connection, a restarting server) are retried with exponential backoff; a stream
re-issues its query from the last row it delivered, so nothing is duplicated or skipped.
Everything else (bad URL, wrong credentials, missing table) becomes one ``SourceError`` line
that names the database without its password.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, Field

from iotswarm_pipelines.cosmos import catalogue, queries, schema
from iotswarm_pipelines.cosmos.errors import SourceError, SourceTableError
from iotswarm_pipelines.secret_files import SecretFileError, read_secret

T = TypeVar("T")


# Failures a later attempt can get past: the connection dropped or the server is (re)starting.
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"})
_TRANSIENT_MARKERS = (
    "ORA-03113",  # end-of-file on communication channel
    "ORA-03114",  # not connected
    "ORA-03135",  # connection lost contact
    "ORA-12170",  # connect timeout
    "ORA-12537",  # connection closed
    "ORA-12541",  # no listener
    "ORA-12547",  # lost contact
    "ORA-12560",  # protocol adapter error
    "ORA-12528",  # instance blocking new connections
    "ORA-01033",  # initialisation or shutdown in progress
    "ORA-01089",  # immediate shutdown in progress
    "DPY-1001",  # not connected
    "DPY-4011",  # connection closed by the database or network
    "DPY-6005",  # cannot connect
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "connection timeout expired",
    "the database system is starting up",
    "the database system is shutting down",
    "consuming input failed",
    "database is locked",
)
# Failures that no retry fixes and that must surface at once: credentials and roles.
_AUTH_SQLSTATES = frozenset({"28000", "28P01"})
_AUTH_PATTERN = re.compile(
    r"authentication failed|no pg_hba\.conf entry|not permitted to log in"
    r"|role \".*\" does not exist|ORA-01017|ORA-28000|ORA-01045|DPY-4001",
    re.IGNORECASE,
)
_MISSING_TABLE_SQLSTATES = frozenset({"42P01"})
_MISSING_TABLE_PATTERN = re.compile(r"ORA-00942|no such table", re.IGNORECASE)


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could succeed: a disconnect, not a bad query or bad credentials."""
    if isinstance(exc, sa.exc.DisconnectionError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    text = str(exc.orig)
    if _sqlstate(exc) in _AUTH_SQLSTATES or _AUTH_PATTERN.search(text):
        return False
    if exc.connection_invalidated or _sqlstate(exc) in _TRANSIENT_SQLSTATES:
        return True
    return any(marker.lower() in text.lower() for marker in _TRANSIENT_MARKERS)


def _is_missing_table(exc: sa.exc.SQLAlchemyError) -> bool:
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    return _sqlstate(exc) in _MISSING_TABLE_SQLSTATES or bool(
        _MISSING_TABLE_PATTERN.search(str(exc.orig))
    )


def _first_line(exc: BaseException) -> str:
    """The driver's first line, plus the socket error beneath it when the driver wraps one
    (oracledb's DPY-6005 "cannot connect" hides "Connection refused" on its second line)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    first = lines[0] if lines else type(orig).__name__
    cause = orig.__cause__
    if isinstance(cause, OSError) and (reason := cause.strerror or str(cause)) not in first:
        first = f"{first.rstrip('.')}: {reason}"
    return first


def _redacted(url: str) -> str:
    """The URL for messages, password hidden; an unparseable one is not shown at all."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<a URL that cannot be parsed>"  # never echoed: it may hold a password


# One engine (and its connection pool) per process and database, shared by every instance of
# the source: each run, sensor tick and asset check builds its own ``CosmosSource``.
_ENGINES: dict[tuple[str, str | None, float], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _forget_inherited_engines() -> None:
    """In a forked child, drop the parent's pools without closing the sockets it still uses."""
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_inherited_engines)


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests, and before a database restart)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _connect_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
        return {"connect_timeout": max(2, round(timeout))}
    if backend == "oracle" and url.get_driver_name() == "oracledb":
        return {"tcp_connect_timeout": timeout}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


@functools.lru_cache(maxsize=8)
def _read_url_file(path: str) -> str:
    return read_secret(path, "COSMOS source URL")


class CosmosSourceSettings(BaseModel):
    """Which database and how to read it: the fields of ``CosmosSource`` and of its Dagster
    resource (``cosmos.resource.CosmosSourceResource``), declared once for both."""

    url: str = Field(
        default="",
        description="SQLAlchemy URL: oracle+oracledb://..., postgresql+psycopg://..., sqlite:///...",
    )
    url_file: str = Field(
        default="",
        description="A file holding the URL instead (it may hold the password): a mounted "
        "secret, or iot-swarm's private hand-over to its shards.",
    )
    schema_name: str | None = Field(
        default=None, description="Schema holding the tables, e.g. COSMOS on Oracle."
    )
    chunk_rows: int = Field(default=5000, gt=0, description="Rows fetched per round trip.")
    retries: int = Field(default=4, ge=0, description="Retries of a transient failure.")
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles on each further retry."
    )
    connect_timeout_seconds: float = Field(
        default=10, gt=0, description="Give up connecting after this long."
    )


class CosmosSource(CosmosSourceSettings):
    """Reads COSMOS tables by site and time from any SQLAlchemy URL, streaming large reads."""

    # ----------------------------------------------------------------- public reads

    def check(self, tables: Sequence[catalogue.Table] = ()) -> None:
        """Fail with a ``SourceError`` unless the database answers and has ``tables``.

        The first answer counts, without retries: a pre-flight check must name a server that is
        down (connection refused) at once, not after the backoff meant for a restart mid-run.
        """
        self._run(lambda conn: conn.execute(queries.ping()).scalar_one(), retry=False)
        if tables:
            missing = self._run(
                lambda conn: [
                    t.name
                    for t in tables
                    if not sa.inspect(conn).has_table(t.name, schema=self.schema_name)
                ]
            )
            if missing:
                raise SourceTableError(
                    f"COSMOS source {self._safe_url}: missing table(s) {', '.join(missing)}; "
                    "create them (cosmos-sample for a sample database) or fix schema_name"
                )

    def list_sites(self, table: catalogue.Table | None = None) -> list[str]:
        """Sorted site IDs: those with rows in ``table``, else the ``SITES`` table's.

        Without ``SITES`` (or with it empty) the sites with rows in any catalogue table are used.
        """
        if table is not None:
            return self._sites_in(schema.sa_table(table))
        try:
            listed = self._run(
                lambda conn: list(conn.execute(queries.listed_sites()).scalars()),
                catalogue.SITES_TABLE,
            )
        except SourceTableError:
            listed = []
        if listed:
            return listed
        present = self._run(
            lambda conn: [
                table
                for table in catalogue.TABLES.values()
                if sa.inspect(conn).has_table(table.name, schema=self.schema_name)
            ]
        )
        return sorted({s for table in present for s in self._sites_in(schema.sa_table(table))})

    def newest_times(
        self, table: catalogue.Table, site_ids: Sequence[str] | None = None
    ) -> dict[str, datetime]:
        """Each site's newest ``DATE_TIME`` in ``table``; sites without rows are left out."""
        sa_table = schema.sa_table(table)
        sites = self._sites_for(sa_table, site_ids)
        if not sites:
            return {}
        rows = self._run(
            lambda conn: conn.execute(queries.newest_times(sa_table, sites)).all(), sa_table.name
        )
        if self._engine().dialect.name == "sqlite":
            self._refuse_iso_t_text(sa_table, sites)
        return {site: newest for site, newest in sorted(rows) if newest is not None}

    def _refuse_iso_t_text(self, table: sa.Table, sites: list[str]) -> None:
        """SQLite compares DATE_TIME as text: ``2024-06-01T09:00`` sorts after ``2024-06-01
        10:00``, so a site written with a ``T`` would re-send its watermark's day on every run.
        Its newest row shows how the site is written; refuse it with the fix."""
        texts = self._run(
            lambda conn: conn.execute(queries.newest_times(table, sites, as_stored=True)).all(),
            table.name,
        )
        for site, text in texts:
            if isinstance(text, str) and "T" in text:
                raise SourceError(
                    f"COSMOS source {self._safe_url}: {table.name} stores DATE_TIME of site "
                    f"{site} as ISO text with a 'T' ({text}), which SQLite compares wrongly; "
                    f"rewrite it: UPDATE {table.name} SET DATE_TIME = replace(DATE_TIME, 'T', ' ')"
                )

    def first_times_after(
        self, table: catalogue.Table, starts: Mapping[str, datetime | None]
    ) -> dict[str, datetime]:
        """Each site's oldest ``DATE_TIME`` after its start; sites with nothing newer left out."""
        if not starts:
            return {}
        sa_table = schema.sa_table(table)
        statement = queries.first_times_after(sa_table, sorted(starts.items()))
        rows = self._run(lambda conn: conn.execute(statement).all(), table.name)
        return {site: first for site, first in rows if first is not None}

    def latest_rows(
        self, table: catalogue.Table, site_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Each site's newest row in ``table`` (the first one if several share the time)."""
        sa_table = schema.sa_table(table)
        sites = self._sites_for(sa_table, site_ids)
        if not sites:
            return {}
        rows = self._run(
            lambda conn: conn.execute(queries.latest_rows(sa_table, sites)).all(), sa_table.name
        )
        names = tuple(sa_table.c.keys())
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:
            latest.setdefault(row[0], dict(zip(names, row, strict=True)))
        return dict(sorted(latest.items()))

    def rows_after(
        self,
        table: catalogue.Table,
        site_id: str,
        after: datetime | None,
        until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One site's rows with ``after < DATE_TIME <= until``, oldest first, streamed.

        ``site_id`` is matched exactly as the source stores it (``export.sites`` finds it).
        ``after=None`` starts at the site's first row; ``until=None`` reads to the newest.
        """
        return self._stream(schema.sa_table(table), site_id, after, until)

    def rows_between(
        self,
        table: catalogue.Table,
        after: datetime,
        until: datetime,
        site_ids: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Rows with ``after < DATE_TIME <= until`` ordered by ``SITE_ID`` then ``DATE_TIME``.

        Read site by site so each query is an index range scan; all sites with rows in the
        table when ``site_ids`` is None.
        """
        sa_table = schema.sa_table(table)

        def stream() -> Iterator[dict[str, Any]]:
            for site_id in self._sites_for(sa_table, site_ids):
                yield from self._stream(sa_table, site_id, after, until)

        return stream()

    def recent_rows(self, table: catalogue.Table, site_id: str, limit: int) -> list[dict[str, Any]]:
        """A site's newest ``limit`` rows, oldest first (history for a swarm device to replay)."""
        if limit <= 0:
            return []
        sa_table = schema.sa_table(table)
        names = tuple(sa_table.c.keys())
        site_id = site_id.strip().upper()
        rows = self._run(
            lambda conn: conn.execute(queries.recent_rows(sa_table, site_id, limit)).all(),
            sa_table.name,
        )
        return [dict(zip(names, row, strict=True)) for row in reversed(rows)]

    # ----------------------------------------------------------------- machinery

    @property
    def _url(self) -> str:
        """``url``, else the one in ``url_file`` (read once per process)."""
        if self.url or not self.url_file:
            return self.url
        try:
            return _read_url_file(self.url_file)
        except SecretFileError as exc:
            raise SourceError(f"COSMOS source: {exc}") from None

    @property
    def _safe_url(self) -> str:
        return _redacted(self._url)

    def _sites_for(self, table: sa.Table, site_ids: Sequence[str] | None) -> list[str]:
        if site_ids is None:
            return self._sites_in(table)
        return sorted(set(site_ids))  # as stored: ``export.sites`` matched them

    def _sites_in(self, table: sa.Table) -> list[str]:
        """Distinct site IDs of a table by a loose index scan: one probe per site, not a scan."""

        def probe(conn: sa.Connection) -> list[str]:
            sites: list[str] = []
            while True:
                site = conn.execute(queries.next_site(table, sites[-1] if sites else None)).scalar()
                if site is None:
                    return sites
                sites.append(site)

        return self._run(probe, table.name)

    def _engine(self) -> sa.Engine:
        key = (self._url, self.schema_name, self.connect_timeout_seconds)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = self._create_engine()
                _ENGINES[key] = engine
            return engine

    def _create_engine(self) -> sa.Engine:
        try:
            url = sa.engine.make_url(self._url)
        except sa.exc.ArgumentError:
            raise SourceError(
                "COSMOS source URL cannot be parsed as a SQLAlchemy URL: expected "
                "oracle+oracledb://user:password@host:1521/?service_name=..., "
                "postgresql+psycopg://user:password@host/db or sqlite:///path/to/cosmos.sqlite"
            ) from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            if not path.is_file():
                raise SourceError(
                    f"COSMOS source {self._safe_url}: SQLite file {path} does not exist; "
                    "create it with `cosmos-sample` or point the URL at an existing database"
                )
        options: dict[str, Any] = {}
        if self.schema_name:
            options["schema_translate_map"] = {None: self.schema_name}
        try:
            return sa.create_engine(
                url,
                pool_pre_ping=True,
                connect_args=_connect_args(url, self.connect_timeout_seconds),
                execution_options=options,
            )
        except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError, ImportError) as exc:
            raise SourceError(
                f"COSMOS source {self._safe_url}: cannot use this database URL "
                f"({_first_line(exc)}); is the dialect spelled right and its driver installed?"
            ) from None

    def _fail(self, exc: sa.exc.SQLAlchemyError, table: str | None) -> SourceError:
        detail = _first_line(exc)
        password = sa.engine.make_url(self._url).password
        if password:  # drivers do not echo it; this is a second line of defence
            detail = re.sub(rf"(?<!\w){re.escape(str(password))}(?!\w)", "***", detail)
        if table is not None and _is_missing_table(exc):
            return SourceTableError(
                f"COSMOS source {self._safe_url}: table {table} does not exist ({detail}); "
                "create it (cosmos-sample for a sample database) or fix schema_name"
            )
        return SourceError(f"COSMOS source {self._safe_url}: {detail}")

    def _unreachable(self, exc: OSError) -> SourceError:
        """Some drivers (oracledb's thin mode) let socket errors such as DNS failures through."""
        return SourceError(
            f"COSMOS source {self._safe_url}: cannot reach the database server ({exc}); "
            "check the host name and port in the URL"
        )

    def _run(
        self, work: Callable[[sa.Connection], T], table: str | None = None, retry: bool = True
    ) -> T:
        """``work`` in one connection, re-run from scratch after a transient failure."""
        engine = self._engine()
        retries = _Retries(self, table, self.retries if retry else 0)
        while True:
            try:
                with engine.connect() as conn:
                    return work(conn)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                retries.after(exc)

    def _stream(
        self,
        table: sa.Table,
        site_id: str,
        after: datetime | None,
        until: datetime | None,
    ) -> Iterator[dict[str, Any]]:
        """Stream one site's rows in chunks; after a transient failure resume at the last row.

        Rows can share a ``DATE_TIME`` (the tables have no primary key), so a resumed query
        starts *at* the last time delivered and drops exactly the rows at that time that were
        already delivered, whatever order the database returns them in this time.
        """
        engine = self._engine()
        names = tuple(table.c.keys())
        lower = after
        at_lower: list[sa.Row] = []  # rows delivered whose DATE_TIME is ``lower``
        retries = _Retries(self, table.name, self.retries)
        while True:
            statement = queries.site_rows(
                table, site_id, lower, until, include_after=bool(at_lower)
            )
            already = Counter(at_lower)
            try:
                with engine.connect() as conn:
                    result = conn.execution_options(
                        stream_results=True, yield_per=self.chunk_rows
                    ).execute(statement)
                    for chunk in result.partitions():
                        retries.made_progress()
                        for row in chunk:
                            when = row[1]
                            if when == lower:
                                if already[row]:
                                    already[row] -= 1
                                    continue
                                at_lower.append(row)
                            else:
                                lower, at_lower = when, [row]
                            yield dict(zip(names, row))  # noqa: B905 - a row has every column
                    return
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                retries.after(exc)


class _Retries:
    """The retry rule of one read, for ``_run`` and ``_stream`` alike: after a transient failure
    wait (``retry_backoff_seconds``, doubling) and let the caller try again, at most ``allowed``
    times in a row; anything else, or one failure too many, ends the read as a ``SourceError``."""

    def __init__(self, source: CosmosSource, table: str | None, allowed: int) -> None:
        self.source, self.table, self.allowed = source, table, allowed
        self.failures = 0

    def after(self, exc: sa.exc.SQLAlchemyError | OSError) -> None:
        """Wait before the next attempt, or raise the error that ends the read."""
        if isinstance(exc, OSError):
            raise self.source._unreachable(exc) from None
        self.failures += 1
        if not is_transient(exc) or self.failures > self.allowed:
            raise self.source._fail(exc, self.table) from None
        time.sleep(self.source.retry_backoff_seconds * 2 ** (self.failures - 1))

    def made_progress(self) -> None:
        """Rows arrived: the next failure is the first of its run again."""
        self.failures = 0
