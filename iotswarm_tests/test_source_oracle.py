"""The COSMOS source on Oracle: every statement compiled for Oracle, plus an opt-in live test.

No Oracle runs here, so the statements are checked as Oracle would receive them: tables in
schema ``COSMOS``, values only as bind parameters, Oracle's row limiting, short bind names.
Set ``IOTSWARM_TEST_ORACLE_URL`` (and ``IOTSWARM_TEST_ORACLE_SCHEMA`` if it is not ``COSMOS``)
to also run read-only checks against a real COSMOS database.
"""

from __future__ import annotations

import inspect
import os
import re
from datetime import datetime, timedelta

import oracledb
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from iotswarm_pipelines.cosmos import catalogue, queries, schema
from iotswarm_pipelines.cosmos.errors import SourceError, SourceTableError
from iotswarm_pipelines.cosmos.source import CosmosSource, dispose_engines, is_transient

AFTER = datetime(2031, 7, 9, 1, 2, 3)
UNTIL = datetime(2031, 7, 10, 4, 5, 6)
SITES = ["ALIC1", "BALRD", "MORLY"]
LIMIT = 4242


def _builders(table: sa.Table) -> dict[str, tuple[sa.Executable, list[object]]]:
    """Each builder in ``queries`` with the values it was given (which must not appear in SQL)."""
    return {
        "ping": (queries.ping(), []),
        "listed_sites": (queries.listed_sites(), []),
        "next_site": (queries.next_site(table, "BALRD"), ["BALRD"]),
        "newest_times": (queries.newest_times(table, SITES), SITES),
        "latest_rows": (queries.latest_rows(table, SITES), SITES),
        "first_times_after": (
            queries.first_times_after(table, [("ALIC1", AFTER), ("BALRD", None)]),
            ["ALIC1", AFTER, "BALRD"],
        ),
        "site_rows": (queries.site_rows(table, "ALIC1", AFTER, UNTIL), ["ALIC1", AFTER, UNTIL]),
        "recent_rows": (queries.recent_rows(table, "ALIC1", LIMIT), ["ALIC1", LIMIT]),
    }


def _oracle_sql(statement: sa.Executable) -> tuple[str, dict]:
    compiled = statement.compile(
        dialect=oracle.dialect(),
        schema_translate_map={None: catalogue.SCHEMA},
        render_schema_translate=True,
    )
    return compiled.string, compiled.params


def test_every_builder_is_checked_here():
    public = {
        name
        for name, fn in inspect.getmembers(queries, inspect.isfunction)
        if fn.__module__ == queries.__name__ and not name.startswith("_")
    }
    assert public == set(_builders(schema.sa_table("LEVEL1_SOILMET_30MIN")))


@pytest.mark.parametrize("table_name", catalogue.TABLE_NAMES)
@pytest.mark.parametrize("builder", list(_builders(schema.sa_table("LEVEL1_SOILMET_30MIN"))))
def test_oracle_sql_is_schema_qualified_and_fully_bound(table_name, builder):
    statement, values = _builders(schema.sa_table(table_name))[builder]

    sql, params = _oracle_sql(statement)

    # Every table is COSMOS.<name>; only the NEWEST alias appears unqualified.
    tables = re.findall(r'(?:FROM|JOIN)\s+((?:"\w+"\.)?"\w+")', sql)
    assert tables or builder == "ping"
    assert all(t.startswith(f'"{catalogue.SCHEMA}".') for t in tables), sql
    assert "__[SCHEMA" not in sql
    # Values travel only as binds: none of them, and no quoted literal, is in the text.
    assert "'" not in sql
    for value in values:
        text = value.strftime("%Y") if isinstance(value, datetime) else str(value)
        assert text not in sql, sql
        assert value in params.values()
    binds = set(re.findall(r":(\w+)", sql))
    assert binds == set(params), sql
    assert all(len(b) <= 30 for b in binds), "Oracle < 12.2 limits bind names to 30 characters"
    assert "POSTCOMPILE" not in sql


def test_oracle_row_limiting_uses_a_bound_fetch_first():
    sql, params = _oracle_sql(queries.recent_rows(schema.sa_table("LEVEL1_NMDB_1HOUR"), "ALIC1", 7))

    assert re.search(r"ORDER BY .*\"DATE_TIME\" DESC\s+FETCH FIRST :row_limit ROWS ONLY", sql)
    assert params["row_limit"] == 7
    assert "ROWNUM" not in sql


def test_oracle_selects_without_a_table_read_from_dual():
    sql, _ = _oracle_sql(queries.ping())

    assert sql.endswith("FROM DUAL")


def test_oracle_probes_compare_one_site_each():
    sql, params = _oracle_sql(queries.newest_times(schema.sa_table("LEVEL1_PRECIP_1MIN"), SITES))

    assert sql.count("UNION ALL") == len(SITES) - 1
    assert "GROUP BY" not in sql and "DISTINCT" not in sql
    assert sorted(v for v in params.values()) == sorted(SITES * 2)


def test_oracle_resource_engine_maps_tables_into_the_schema():
    source = CosmosSource(
        url="oracle+oracledb://cosmos:s3cret@db.example.invalid:1521/?service_name=COSMOS",
        schema_name="COSMOS",
        connect_timeout_seconds=3,
    )
    try:
        engine = source._engine()  # creating an engine does not connect
        assert engine.dialect.name == "oracle"
        assert engine.get_execution_options()["schema_translate_map"] == {None: "COSMOS"}
        assert engine.pool._pre_ping
    finally:
        dispose_engines()


# ------------------------------------------------------------------------------ live Oracle

ORACLE_URL = os.environ.get("IOTSWARM_TEST_ORACLE_URL")
ORACLE_SCHEMA = os.environ.get("IOTSWARM_TEST_ORACLE_SCHEMA", catalogue.SCHEMA)
live_oracle = pytest.mark.skipif(
    not ORACLE_URL,
    reason="opt-in: set IOTSWARM_TEST_ORACLE_URL=oracle+oracledb://user:password@host:1521/"
    "?service_name=... to read a real COSMOS Oracle database",
)


@pytest.mark.oracle
@live_oracle
def test_live_oracle_reads_the_newest_data_of_a_site():
    source = CosmosSource(url=ORACLE_URL, schema_name=ORACLE_SCHEMA, chunk_rows=500)
    table = "LEVEL1_SOILMET_30MIN"
    try:
        source.check([table])
        sites = source.list_sites()
        assert sites and all(len(s) == 5 for s in sites)

        newest = source.newest_times(table, sites)
        assert newest
        site_id, last = next(iter(newest.items()))
        assert isinstance(last, datetime) and last.tzinfo is None

        latest = source.latest_rows(table, [site_id])[site_id]
        assert list(latest) == list(catalogue.get_table(table).column_names)
        assert latest["DATE_TIME"] == last

        day = list(source.rows_after(table, site_id, last - timedelta(days=1), last))
        times = [r["DATE_TIME"] for r in day]
        assert times == sorted(times) and times[-1] == last
        assert all(last - timedelta(days=1) < t <= last for t in times)

        assert source.recent_rows(table, site_id, 3)[-1]["DATE_TIME"] == last
    finally:
        dispose_engines()


@pytest.mark.oracle
@live_oracle
def test_live_oracle_wrong_password_is_one_line_without_it():
    url = sa.engine.make_url(ORACLE_URL).set(password="iotswarm-wrong-password")
    source = CosmosSource(url=url.render_as_string(hide_password=False), schema_name=ORACLE_SCHEMA)
    try:
        with pytest.raises(SourceError, match=r"ORA-01017|DPY-4001") as caught:
            source.check()
        assert "iotswarm-wrong-password" not in str(caught.value)
    finally:
        dispose_engines()


def test_oracle_binds_times_as_date_so_the_index_stays_usable():
    """A TIMESTAMP bind would make Oracle convert every DATE_TIME and skip the index."""
    engine = sa.create_engine("oracle+oracledb://cosmos@db.example.invalid/?service_name=COSMOS")
    statement = queries.site_rows(schema.sa_table("LEVEL1_PRECIP_1MIN"), "ALIC1", AFTER, UNTIL)

    compiled = statement.compile(dialect=engine.dialect)
    sizes = compiled._get_set_input_sizes_lookup()

    time_binds = [
        kind
        for bind, kind in sizes.items()
        if compiled.bind_names[bind].startswith(catalogue.DATE_TIME)
    ]
    assert len(time_binds) == 2
    assert all(kind == oracledb.DB_TYPE_DATE for kind in time_binds)
    engine.dispose()


def _driver_error(message: str, kind: type[sa.exc.DBAPIError] = sa.exc.OperationalError):
    return kind("SELECT 1 FROM DUAL", {}, Exception(message))


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("ORA-03113: end-of-file on communication channel", True),
        ("ORA-03114: not connected to ORACLE", True),
        ("ORA-12541: TNS:no listener", True),
        ("DPY-4011: the database or network closed the connection", True),
        ("DPY-6005: cannot connect to database", True),
        ("ORA-01033: ORACLE initialization or shutdown in progress", True),
        ("ORA-01017: invalid username/password; logon denied", False),
        ("ORA-28000: the account is locked", False),
        ("ORA-00942: table or view does not exist", False),
        ("ORA-00904: invalid identifier", False),
    ],
)
def test_oracle_errors_are_retried_only_when_transient(message, transient):
    assert is_transient(_driver_error(message)) is transient


def test_oracle_missing_table_is_named():
    source = CosmosSource(url="oracle+oracledb://cosmos:s3cret@db.example.invalid/?service_name=X")
    error = _driver_error("ORA-00942: table or view does not exist", sa.exc.DatabaseError)

    failure = source._fail(error, "LEVEL1_NMDB_1HOUR")

    assert isinstance(failure, SourceTableError)
    assert str(failure) == (
        "COSMOS source oracle+oracledb://cosmos:***@db.example.invalid/?service_name=X: "
        "table LEVEL1_NMDB_1HOUR does not exist (ORA-00942: table or view does not exist); "
        "create it (cosmos-sample for a sample database) or fix schema_name"
    )
