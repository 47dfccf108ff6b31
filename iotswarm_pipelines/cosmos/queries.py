"""The statements the COSMOS source runs, as pure builders so tests can compile them for Oracle.

Every statement filters on ``SITE_ID`` by equality and ranges or maximises ``DATE_TIME`` within
one site, so each one is an index range scan (or a min/max probe) on ``(SITE_ID, DATE_TIME)``
whatever the table size. ``GROUP BY SITE_ID`` or ``DISTINCT SITE_ID`` would read the whole index
of a 1-minute table on every sensor tick, so per-site probes are combined with ``UNION ALL``
instead. Values are always bound parameters; identifiers come only from ``schema``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema


def _site(table: sa.FromClause) -> sa.ColumnElement[str]:
    return table.c[catalogue.SITE_ID]


def _time(table: sa.FromClause) -> sa.ColumnElement[datetime]:
    return table.c[catalogue.DATE_TIME]


def _site_literal(site_id: str) -> sa.ColumnElement[str]:
    # Typed so PostgreSQL and Oracle know the bound value's type inside a select list.
    return sa.literal(site_id, type_=sa.String(5)).label(catalogue.SITE_ID)


def ping() -> sa.Select:
    return sa.select(sa.literal(1, type_=sa.Integer()))


def listed_sites() -> sa.Select:
    """Every site in ``SITES``, sorted."""
    return sa.select(_site(schema.SITES)).order_by(_site(schema.SITES))


def next_site(table: sa.Table, after: str | None) -> sa.Select:
    """The smallest site ID above ``after``: one index probe of a loose index scan."""
    statement = sa.select(sa.func.min(_site(table)))
    if after is not None:
        statement = statement.where(_site(table) > after)
    return statement


def newest_times(
    table: sa.Table, site_ids: Sequence[str], *, as_stored: bool = False
) -> sa.CompoundSelect | sa.Select:
    """``(SITE_ID, MAX(DATE_TIME))`` per site; a site without rows gives a NULL time.

    ``as_stored`` returns the value unconverted: on SQLite, the text as written, which the
    source checks for the ISO ``T`` spelling that SQLite would compare wrongly.
    """
    newest: sa.ColumnElement[Any] = sa.func.max(_time(table))
    if as_stored:
        newest = sa.type_coerce(newest, sa.String())
    probes = [
        sa.select(
            _site_literal(site_id),
            newest.label(catalogue.DATE_TIME),
        ).where(_site(table) == site_id)
        for site_id in site_ids
    ]
    return _union(probes)


def first_times_after(
    table: sa.Table, starts: Sequence[tuple[str, datetime | None]]
) -> sa.CompoundSelect | sa.Select:
    """``(SITE_ID, MIN(DATE_TIME))`` per site after its start (None: its first row at all)."""
    probes = []
    for site_id, start in starts:
        probe = sa.select(
            _site_literal(site_id), sa.func.min(_time(table)).label(catalogue.DATE_TIME)
        ).where(_site(table) == site_id)
        probes.append(probe if start is None else probe.where(_time(table) > start))
    return _union(probes)


def latest_rows(table: sa.Table, site_ids: Sequence[str]) -> sa.CompoundSelect | sa.Select:
    """The rows at each site's newest ``DATE_TIME``, in catalogue column order."""
    newest = table.alias("NEWEST")
    probes = [
        sa.select(*table.c)
        .where(_site(table) == site_id)
        .where(
            _time(table)
            == sa.select(sa.func.max(_time(newest)))
            .where(_site(newest) == site_id)
            .scalar_subquery()
        )
        for site_id in site_ids
    ]
    return _union(probes)


def site_rows(
    table: sa.Table,
    site_id: str,
    after: datetime | None,
    until: datetime | None,
    *,
    include_after: bool = False,
) -> sa.Select:
    """One site's rows with ``after < DATE_TIME <= until``, oldest first.

    ``include_after`` makes the lower bound inclusive, which a resumed stream needs when rows
    share a ``DATE_TIME`` and only some of them were delivered before the connection dropped.
    """
    statement = sa.select(*table.c).where(_site(table) == site_id)
    if after is not None:
        lower = _time(table) >= after if include_after else _time(table) > after
        statement = statement.where(lower)
    if until is not None:
        statement = statement.where(_time(table) <= until)
    return statement.order_by(_time(table))


def recent_rows(table: sa.Table, site_id: str, limit: int) -> sa.Select:
    """One site's newest ``limit`` rows, newest first (the caller reverses them)."""
    return (
        sa.select(*table.c)
        .where(_site(table) == site_id)
        .order_by(_time(table).desc())
        # A bound limit keeps one SQL text for every limit (SQLAlchemy inlines plain integers).
        .limit(sa.bindparam("row_limit", limit, type_=sa.Integer()))
    )


def _union(probes: list[sa.Select]) -> sa.CompoundSelect | sa.Select:
    if not probes:
        raise ValueError("at least one site is needed")
    return probes[0] if len(probes) == 1 else sa.union_all(*probes)
