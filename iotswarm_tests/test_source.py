"""The COSMOS source against real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import gc
import importlib.util
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.errors import SourceError, SourceTableError
from iotswarm_pipelines.cosmos.resource import CosmosSourceResource
from iotswarm_pipelines.cosmos.source import CosmosSource, is_transient
from iotswarm_tests.services import free_port, terminate_other_backends

RAINE = "LEVEL1_PRECIP_RAINE_1MIN"
SOILMET = "LEVEL1_SOILMET_30MIN"
T0 = datetime(2024, 6, 1)


pytestmark = pytest.mark.usefixtures("fresh_engines")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty database with every COSMOS table and ``SITES`` created."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cosmos.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = sa.create_engine(url)
    schema.metadata.create_all(engine)
    engine.dispose()
    return url


def insert(url: str, table: sa.Table, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()


def raine_rows(site_id: str, minutes: range) -> list[dict]:
    return [
        {
            "SITE_ID": site_id,
            "DATE_TIME": T0 + timedelta(minutes=m),
            "PRECIP_RAINE": m / 10,
            "PRECIP_RAINE_DIAG": m,
        }
        for m in minutes
    ]


def fill_raine(url: str) -> str:
    """Two sites with ten rows each (minutes 1..10) and one site with three (1..3)."""
    insert(
        url,
        schema.sa_table(RAINE),
        raine_rows("ALIC1", range(1, 11))
        + raine_rows("BALRD", range(1, 11))
        + raine_rows("CHIMN", range(1, 4)),
    )
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def raine_db(request, tmp_path_factory) -> Iterator[str]:
    """``fill_raine`` data, shared by the tests that only read it (a database takes ~1 s)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('raine') / 'cosmos.sqlite'}"
        admin = None
    else:
        server = request.getfixturevalue("pg_server_url")
        name = f"iotswarm_test_source_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    schema.metadata.create_all(engine)
    engine.dispose()
    try:
        yield fill_raine(url)
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


# ------------------------------------------------------------------------------ sites


def test_list_sites_comes_from_the_sites_table(db_url):
    insert(
        db_url,
        schema.SITES,
        [{"SITE_ID": s.site_id, "SITE_NAME": s.name} for s in catalogue.SITES[:5]],
    )
    insert(db_url, schema.sa_table(RAINE), raine_rows("WYTH1", range(1, 3)))

    assert CosmosSource(url=db_url).list_sites() == sorted(s.site_id for s in catalogue.SITES[:5])


def test_list_sites_of_a_table_are_the_sites_with_rows(db_url):
    fill_raine(db_url)
    insert(db_url, schema.SITES, [{"SITE_ID": "ZZZZZ", "SITE_NAME": "listed only"}])

    assert CosmosSource(url=db_url).list_sites(RAINE) == ["ALIC1", "BALRD", "CHIMN"]


def test_list_sites_falls_back_to_table_contents_when_sites_is_empty(db_url):
    fill_raine(db_url)
    insert(db_url, schema.sa_table(SOILMET), [{"SITE_ID": "MORLY", "DATE_TIME": T0}])

    assert CosmosSource(url=db_url).list_sites() == ["ALIC1", "BALRD", "CHIMN", "MORLY"]


def test_list_sites_falls_back_when_the_sites_table_is_missing(tmp_path):
    url = f"sqlite:///{tmp_path / 'no-sites.sqlite'}"
    engine = sa.create_engine(url)
    schema.sa_table(RAINE).create(engine)
    engine.dispose()
    insert(url, schema.sa_table(RAINE), raine_rows("HOLLN", range(1, 3)))

    assert CosmosSource(url=url).list_sites() == ["HOLLN"]


# ------------------------------------------------------------------------------ newest


def test_newest_times_per_site_are_naive_datetimes(raine_db):
    newest = CosmosSource(url=raine_db).newest_times(RAINE)

    assert newest == {"ALIC1": at(10), "BALRD": at(10), "CHIMN": at(3)}
    assert all(type(t) is datetime and t.tzinfo is None for t in newest.values())


def test_newest_times_of_chosen_sites_leave_out_sites_without_rows(raine_db):
    newest = CosmosSource(url=raine_db).newest_times(RAINE, ["CHIMN", "MORLY"])

    assert newest == {"CHIMN": at(3)}


def test_newest_times_of_an_empty_table_is_empty(db_url):
    assert CosmosSource(url=db_url).newest_times(SOILMET) == {}


def test_latest_rows_are_whole_rows_in_catalogue_order_with_driver_types(raine_db):
    latest = CosmosSource(url=raine_db).latest_rows(RAINE, ["BALRD", "CHIMN"])

    assert latest == {
        "BALRD": {
            "SITE_ID": "BALRD",
            "DATE_TIME": at(10),
            "PRECIP_RAINE": 1.0,
            "PRECIP_RAINE_DIAG": 10,
        },
        "CHIMN": {
            "SITE_ID": "CHIMN",
            "DATE_TIME": at(3),
            "PRECIP_RAINE": 0.3,
            "PRECIP_RAINE_DIAG": 3,
        },
    }
    row = latest["BALRD"]
    assert list(row) == list(catalogue.get_table(RAINE).column_names)
    assert type(row["PRECIP_RAINE_DIAG"]) is int
    assert type(row["PRECIP_RAINE"]) is float


def test_latest_rows_of_a_wide_table_keep_nulls(db_url):
    table = catalogue.get_table(SOILMET)
    insert(
        db_url,
        schema.sa_table(SOILMET),
        [
            {"SITE_ID": "ALIC1", "DATE_TIME": T0, "TA": 1.5, "RECORD": 7},
            {"SITE_ID": "ALIC1", "DATE_TIME": T0 + table.cadence, "TA": 2.5, "RECORD": 8},
        ],
    )

    row = CosmosSource(url=db_url).latest_rows(SOILMET)["ALIC1"]

    assert list(row) == list(table.column_names)
    assert (row["DATE_TIME"], row["TA"], row["RECORD"], row["SWIN"]) == (
        T0 + table.cadence,
        2.5,
        8,
        None,
    )


def test_recent_rows_are_the_newest_few_oldest_first(raine_db):
    rows = CosmosSource(url=raine_db).recent_rows(RAINE, "ALIC1", 3)

    assert [r["DATE_TIME"] for r in rows] == [at(8), at(9), at(10)]


# ------------------------------------------------------------------------------ streams


@pytest.mark.parametrize("chunk_rows", [1, 3, 5000])
def test_rows_after_is_exclusive_below_inclusive_above_and_oldest_first(raine_db, chunk_rows):
    source = CosmosSource(url=raine_db, chunk_rows=chunk_rows)

    assert [r["DATE_TIME"] for r in source.rows_after(RAINE, "ALIC1", at(3), at(7))] == [
        at(4),
        at(5),
        at(6),
        at(7),
    ]
    assert [r["PRECIP_RAINE_DIAG"] for r in source.rows_after(RAINE, "BALRD", at(8))] == [9, 10]
    assert len(list(source.rows_after(RAINE, "CHIMN", None))) == 3
    assert list(source.rows_after(RAINE, "ALIC1", at(10))) == []


def test_rows_between_are_ordered_by_site_then_time(raine_db):
    source = CosmosSource(url=raine_db, chunk_rows=2)

    keys = [(r["SITE_ID"], r["DATE_TIME"]) for r in source.rows_between(RAINE, at(2), at(4))]

    assert keys == [
        ("ALIC1", at(3)),
        ("ALIC1", at(4)),
        ("BALRD", at(3)),
        ("BALRD", at(4)),
        ("CHIMN", at(3)),
    ]


def test_rows_between_chosen_sites(raine_db):
    rows = CosmosSource(url=raine_db).rows_between(RAINE, at(0), at(100), ["CHIMN", "ALIC1"])

    assert Counter(r["SITE_ID"] for r in rows) == {"ALIC1": 10, "CHIMN": 3}


def test_abandoned_stream_gives_its_connection_back(raine_db):
    source = CosmosSource(url=raine_db, chunk_rows=2)
    pool = source._engine().pool

    stream = source.rows_after(RAINE, "ALIC1", None)
    next(stream)
    assert pool.checkedout() == 1
    stream.close()
    assert pool.checkedout() == 0

    forgotten = source.rows_between(RAINE, at(0), at(10))
    next(forgotten)
    assert pool.checkedout() == 1
    del forgotten
    gc.collect()

    assert pool.checkedout() == 0


# ------------------------------------------------------------------------------ errors


def test_unknown_table_is_a_source_error_and_an_unknown_table_error(raine_db):
    source = CosmosSource(url=raine_db)

    for call in (
        lambda: source.newest_times("LEVEL1_NOPE"),
        lambda: source.rows_between("LEVEL1_NOPE", at(0), at(1)),
        lambda: source.rows_after("LEVEL1_NOPE", "ALIC1", at(0)),
    ):
        with pytest.raises(SourceError, match="unknown COSMOS table 'LEVEL1_NOPE'") as caught:
            call()
        assert isinstance(caught.value, catalogue.UnknownTableError)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_missing_table_names_the_table(request, tmp_path, backend):
    url = (
        f"sqlite:///{tmp_path / 'empty.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    sa.create_engine(url).connect().close()  # creates the empty SQLite file
    source = CosmosSource(url=url, retry_backoff_seconds=0)

    with pytest.raises(SourceTableError, match=f"table {RAINE} does not exist"):
        list(source.rows_after(RAINE, "ALIC1", None))
    with pytest.raises(SourceTableError, match=f"table {RAINE} does not exist"):
        source.newest_times(RAINE, ["ALIC1"])
    with pytest.raises(SourceTableError, match=f"missing table\\(s\\) {RAINE}"):
        source.check([RAINE])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url with s3cret", "cannot be parsed as a SQLAlchemy URL"),
        ("nosuchdb://user:s3cret@host/db", "cannot use this database URL"),
        ("mysql+nosuchdriver://user:s3cret@host/db", "cannot use this database URL"),
        pytest.param(
            "postgresql+pg8000://user:s3cret@host/db",
            "No module named 'pg8000'.*driver installed",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("pg8000") is not None, reason="pg8000 is installed"
            ),
        ),
        ("sqlite:////nonexistent-iotswarm/cosmos.sqlite", "does not exist"),
    ],
)
def test_bad_url_is_one_clear_line_without_the_password(url, message):
    with pytest.raises(SourceError, match=message) as caught:
        CosmosSource(url=url).check()

    text = str(caught.value)
    assert "\n" not in text
    assert "s3cret" not in text


def _count_connects(source: CosmosSource) -> list[int]:
    attempts = [0]

    @sa.event.listens_for(source._engine(), "do_connect")
    def count(*_):
        attempts[0] += 1

    return attempts


@pytest.fixture
def pg_role(pg_server_url) -> Iterator[str]:
    """A role with a password that may not log in: the server trusts loopback passwords."""
    name = f"iotswarm_src_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {name} NOLOGIN PASSWORD 'rightpassword'"))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def test_refused_credentials_fail_at_once_without_the_password(pg_url, pg_role):
    url = sa.engine.make_url(pg_url).set(username=pg_role, password="wr0ngpassw0rd")
    source = CosmosSource(
        url=url.render_as_string(hide_password=False), retries=4, retry_backoff_seconds=60
    )
    attempts = _count_connects(source)

    with pytest.raises(SourceError, match=f'role "{pg_role}" is not permitted to log in') as caught:
        source.newest_times(RAINE, ["ALIC1"])

    assert attempts[0] == 1
    assert "wr0ngpassw0rd" not in str(caught.value)
    assert "***" in str(caught.value)


def test_unknown_role_fails_at_once(pg_url):
    url = sa.engine.make_url(pg_url).set(username="iotswarm_no_such_role", password="x")
    source = CosmosSource(url=url.render_as_string(hide_password=False), retry_backoff_seconds=60)
    attempts = _count_connects(source)

    with pytest.raises(SourceError, match="does not exist"):
        source.check()
    assert attempts[0] == 1


def test_unreachable_server_is_retried_then_named():
    url = f"postgresql+psycopg://cosmos:s3cret@127.0.0.1:{free_port()}/cosmos"
    source = CosmosSource(url=url, retries=2, retry_backoff_seconds=0.01)
    attempts = _count_connects(source)

    with pytest.raises(SourceError, match="Connection refused") as caught:
        source.list_sites()

    assert attempts[0] == 3
    assert str(caught.value).startswith("COSMOS source postgresql+psycopg://cosmos:***@127.0.0.1:")
    assert "s3cret" not in str(caught.value)


def test_a_refused_oracle_is_named_at_once_by_the_pre_flight_check():
    """oracledb's DPY-6005 "cannot connect" keeps "Connection refused" on a line of its own."""
    url = f"oracle+oracledb://cosmos:s3cret@127.0.0.1:{free_port()}/?service_name=cosmos"
    source = CosmosSource(url=url, retry_backoff_seconds=60)
    attempts = _count_connects(source)

    with pytest.raises(SourceError, match=r"DPY-6005.*: Connection refused$") as caught:
        source.check()

    assert attempts[0] == 1  # no retries: the check answers "is it up now"
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_host_name_that_does_not_resolve_is_one_clear_line():
    # oracledb's thin driver lets the resolver's socket error through SQLAlchemy unwrapped.
    url = "oracle+oracledb://cosmos:s3cret@no-such-host.invalid:1521/?service_name=cosmos"

    with pytest.raises(SourceError, match="cannot reach the database server") as caught:
        CosmosSource(url=url, retries=0).check()

    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ('FATAL:  password authentication failed for user "cosmos"', False),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "cosmos"', False),
        ("FATAL:  terminating connection due to administrator command", True),
        ("FATAL:  the database system is starting up", True),
        ("server closed the connection unexpectedly", True),
        ("database is locked", True),
        ('relation "LEVEL1_X" does not exist', False),
        ("no such table: LEVEL1_X", False),
    ],
)
def test_postgresql_and_sqlite_errors_are_retried_only_when_transient(message, transient):
    error = sa.exc.OperationalError("SELECT 1", {}, Exception(message))

    assert is_transient(error) is transient


# ------------------------------------------------------------------------------ retries


@pytest.fixture
def pg_duplicates(pg_url) -> tuple[str, list[tuple]]:
    """Two sites x 1000 minutes, two different rows at every minute (no primary key)."""
    engine = sa.create_engine(pg_url)
    schema.sa_table(RAINE).create(engine)
    engine.dispose()
    rows = [
        {"SITE_ID": site, "DATE_TIME": at(m), "PRECIP_RAINE": m / 10, "PRECIP_RAINE_DIAG": copy}
        for site in ("ALIC1", "BALRD")
        for m in range(1, 1001)
        for copy in (0, 1)
    ]
    insert(pg_url, schema.sa_table(RAINE), rows)
    return pg_url, [tuple(r.values()) for r in rows]


def test_stream_survives_a_killed_connection_without_duplicates_or_gaps(pg_duplicates):
    pg_url, expected = pg_duplicates
    # An odd chunk size makes the connection die between the two rows of one minute.
    source = CosmosSource(url=pg_url, chunk_rows=101, retry_backoff_seconds=0.01)
    stream = source.rows_between(RAINE, at(0), at(5000))
    received = [tuple(next(stream).values()) for _ in range(101)]

    assert terminate_other_backends(pg_url) == 1
    received += [tuple(r.values()) for r in stream]

    assert len(received) == len(expected)
    assert Counter(received) == Counter(expected)
    assert [r[:2] for r in received] == sorted(r[:2] for r in expected)


def test_stream_gives_up_after_its_retries(pg_duplicates):
    pg_url, _ = pg_duplicates
    source = CosmosSource(url=pg_url, chunk_rows=10, retries=0)
    stream = source.rows_after(RAINE, "ALIC1", None)
    next(stream)

    assert terminate_other_backends(pg_url) == 1
    with pytest.raises(SourceError, match="terminating connection due to administrator command"):
        list(stream)


def test_probe_after_a_database_restart_reconnects(raine_db):
    source = CosmosSource(url=raine_db)
    assert source.newest_times(RAINE, ["ALIC1"]) == {"ALIC1": at(10)}
    if raine_db.startswith("postgresql"):
        assert terminate_other_backends(raine_db) == 1  # the idle pooled connection

    assert source.latest_rows(RAINE, ["ALIC1"])["ALIC1"]["DATE_TIME"] == at(10)


# ------------------------------------------------------------------------------ volume

MILLION = 1_000_000
HALF = MILLION // 2


def _bulk_load(url: str, insert_sql: str, params: dict) -> None:
    """Create the table, load it in one statement, then index it (faster than indexing rows)."""
    table = schema.sa_table(RAINE)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        table.create(conn)
        for index in table.indexes:
            index.drop(conn)
        conn.execute(sa.text(insert_sql), params)
        for index in table.indexes:
            index.create(conn)
    engine.dispose()


def _fill_million_postgresql(url: str) -> None:
    _bulk_load(
        url,
        f'INSERT INTO "{RAINE}" SELECT '
        "CASE WHEN i < :half THEN 'ALIC1' ELSE 'BALRD' END, "
        "CAST(:t0 AS timestamp) + (i % :half) * interval '1 minute', "
        "(i % 7) / 10.0, i % :half FROM generate_series(0, :n - 1) AS i",
        {"half": HALF, "t0": T0, "n": MILLION},
    )


def _fill_million_sqlite(url: str) -> None:
    """Rows written by SQLite itself, with times in SQLAlchemy's SQLite DATETIME format."""
    _bulk_load(
        url,
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :n - 1) "
        f'INSERT INTO "{RAINE}" SELECT '
        "CASE WHEN i < :half THEN 'ALIC1' ELSE 'BALRD' END, "
        "strftime('%Y-%m-%d %H:%M:%S.000000', :t0, '+' || (i % :half) || ' minutes'), "
        "(i % 7) / 10.0, i % :half FROM n",
        {"half": HALF, "t0": T0.isoformat(sep=" "), "n": MILLION},
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_million_rows_stream_in_bounded_memory(request, tmp_path, capsys, backend):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'million.sqlite'}"
        _fill_million_sqlite(url)
    else:
        url = request.getfixturevalue("pg_url")
        _fill_million_postgresql(url)
    source = CosmosSource(url=url, chunk_rows=5000)
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    started = time.perf_counter()

    count, previous = 0, ("", datetime.min)
    for row in source.rows_between(RAINE, T0 - timedelta(minutes=1), T0 + timedelta(days=400)):
        key = (row["SITE_ID"], row["DATE_TIME"])
        assert key > previous
        previous = key
        count += 1
        if count % 20_000 == 0:
            peak = max(peak, process.memory_info().rss)
    elapsed = time.perf_counter() - started
    growth_mib = (peak - baseline) / 2**20

    with capsys.disabled():
        print(
            f"\n[cosmos source] {backend}: streamed {count:,} rows in {elapsed:.1f} s "
            f"({count / elapsed:,.0f} rows/s); RSS {baseline / 2**20:.0f} MiB before, "
            f"peak {peak / 2**20:.0f} MiB (growth {growth_mib:.1f} MiB)"
        )
    assert count == MILLION
    assert previous == ("BALRD", T0 + timedelta(minutes=HALF - 1))
    assert growth_mib < 200


# ------------------------------------------------------------------------------ Dagster


def test_resources_share_one_engine_per_database(raine_db):
    first, second = CosmosSource(url=raine_db), CosmosSource(url=raine_db, chunk_rows=7)

    assert first._engine() is second._engine()
    assert CosmosSource(url=raine_db, schema_name="OTHER")._engine() is not first._engine()


def test_an_asset_reads_through_the_resource_with_the_url_from_the_environment(
    raine_db, monkeypatch
):
    monkeypatch.setenv("IOTSWARM_TEST_COSMOS_URL", raine_db)

    @dg.asset
    def newest(cosmos: dg.ResourceParam[CosmosSource]) -> dg.MaterializeResult:
        times = cosmos.newest_times(RAINE)
        return dg.MaterializeResult(
            metadata={"sites": len(times), "newest": str(max(times.values()))}
        )

    result = dg.materialize(
        [newest],
        resources={"cosmos": CosmosSourceResource(url=dg.EnvVar("IOTSWARM_TEST_COSMOS_URL"))},
    )

    metadata = result.asset_materializations_for_node("newest")[0].metadata
    assert (metadata["sites"].value, metadata["newest"].value) == (3, str(at(10)))


def test_build_resources_reads_the_sample_locally_and_cosmos_db_url_in_prod(monkeypatch):
    from iotswarm_pipelines import resources, settings

    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "local")
    local = resources.build_resources()["cosmos"]
    assert (local.url, local.schema_name) == (settings.sample_db_url(), None)

    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "prod")
    monkeypatch.setenv("COSMOS_DB_URL", "oracle+oracledb://cosmos:s3cret@db/?service_name=C")
    prod = resources.build_resources()["cosmos"]
    assert prod.schema_name == catalogue.SCHEMA
    assert prod.url == dg.EnvVar("COSMOS_DB_URL")


# ------------------------------------------------------------------------------ sample database


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reads_what_the_sample_generator_wrote(request, tmp_path, backend):
    from iotswarm_pipelines.cosmos.sample.generator import generate

    url = (
        f"sqlite:///{tmp_path / 'sample.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    start, end = datetime(2024, 3, 1), datetime(2024, 3, 1, 12)
    written = generate(
        url, start=start, end=end, sites=["ALIC1", "MORLY"], tables=[SOILMET], workers=1
    )
    source = CosmosSource(url=url, chunk_rows=7)

    newest = source.newest_times(SOILMET)
    rows = list(source.rows_between(SOILMET, start, end))

    assert set(newest) == {"ALIC1", "MORLY"}
    assert all(start < t <= end for t in newest.values())
    assert len(rows) == written[SOILMET] > 0
    assert {r["SITE_ID"] for r in rows} == {"ALIC1", "MORLY"}
    assert all(type(r["DATE_TIME"]) is datetime for r in rows)
    assert source.latest_rows(SOILMET)["ALIC1"] == next(
        r for r in reversed(rows) if r["SITE_ID"] == "ALIC1"
    )
    assert set(catalogue.SITE_IDS) <= set(source.list_sites())
