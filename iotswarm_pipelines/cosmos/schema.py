"""SQLAlchemy tables for the COSMOS catalogue: the only place SQL identifiers are made.

Tables are declared without a schema; production Oracle maps them into ``COSMOS`` with
``schema_translate_map`` on the engine, so the same statements compile for every database.
Upper-case names are quoted by SQLAlchemy, which on Oracle is the same as unquoted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.catalogue import ColumnType

metadata = sa.MetaData()

_SA_TYPES: dict[ColumnType, Callable[[str], sa.types.TypeEngine[Any]]] = {
    ColumnType.STRING: lambda name: sa.String(5 if name == catalogue.SITE_ID else 64),
    ColumnType.DATETIME: lambda name: sa.DateTime(),
    ColumnType.INTEGER: lambda name: sa.Integer(),
    ColumnType.FLOAT: lambda name: sa.Double(),
}


def _define(table: catalogue.Table) -> sa.Table:
    columns = [
        sa.Column(
            c.name,
            _SA_TYPES[c.type](c.name),
            nullable=c.name not in (catalogue.SITE_ID, catalogue.DATE_TIME),
        )
        for c in table.columns
    ]
    return sa.Table(
        table.name,
        metadata,
        *columns,
        sa.Index(f"IX_{table.key_name}", catalogue.SITE_ID, catalogue.DATE_TIME),
    )


TABLES: dict[str, sa.Table] = {name: _define(t) for name, t in catalogue.TABLES.items()}

SITES = sa.Table(
    catalogue.SITES_TABLE,
    metadata,
    sa.Column("SITE_ID", sa.String(5), primary_key=True),
    sa.Column("SITE_NAME", sa.String(64), nullable=False),
    sa.Column("LATITUDE", sa.Double()),
    sa.Column("LONGITUDE", sa.Double()),
    sa.Column("START_DATE", sa.DateTime()),
    sa.Column("END_DATE", sa.DateTime()),
)


def sa_table(table: catalogue.Table) -> sa.Table:
    """The SQLAlchemy table of a catalogue table."""
    return TABLES[table.name]
