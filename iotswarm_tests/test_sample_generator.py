"""The sample COSMOS database: determinism, site rules, physics, databases, follow mode, CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.sample import SampleError, generate, summarise
from iotswarm_pipelines.cosmos.sample.cli import main
from iotswarm_pipelines.cosmos.sample.follow import follow
from iotswarm_pipelines.cosmos.sample.profiles import RAINE_SITES, SENSOR_GROUPS, profile
from iotswarm_pipelines.cosmos.sample.tables import WM_SENTINEL, clear_caches

START = datetime(2026, 3, 10, 0, 0)
SOILMET = catalogue.SOILMET_30MIN.name
PRECIP = catalogue.PRECIP_1MIN.name
RAINE = catalogue.PRECIP_RAINE_1MIN.name
NMDB = catalogue.NMDB_1HOUR.name
STATUS = catalogue.STATUS_1HOUR.name


def _url(tmp_path, name: str = "cosmos") -> str:
    return f"sqlite:///{tmp_path / f'{name}.sqlite'}"


def _rows(url: str, table: str, site_id: str | None = None) -> list[tuple]:
    t = schema.sa_table(table)
    query = sa.select(t).order_by(t.c.SITE_ID, t.c.DATE_TIME)
    if site_id is not None:
        query = query.where(t.columns[catalogue.SITE_ID] == site_id)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]
    finally:
        engine.dispose()


def _column(rows: list[tuple], table: str, name: str) -> np.ndarray:
    i = catalogue.TABLES[table].column_names.index(name)
    return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=float)


def _all_rows(url: str, tables=catalogue.TABLE_NAMES) -> dict[str, list[tuple]]:
    return {name: _rows(url, name) for name in tables}


def test_same_seed_same_rows_whatever_the_chunking(tmp_path):
    sites = ["ALIC1", "CHIMN"]
    end = START + timedelta(hours=30)
    whole, chunked, other = _url(tmp_path, "whole"), _url(tmp_path, "chunked"), _url(tmp_path, "o")
    counts = generate(whole, start=START, end=end, sites=sites, seed=7)
    clear_caches()
    first = generate(
        chunked, start=START, end=START + timedelta(hours=13, minutes=7), sites=sites, seed=7
    )
    clear_caches()
    second = generate(chunked, start=START, end=end, sites=sites, seed=7)
    assert {t: first[t] + second[t] for t in counts} == counts
    assert counts[PRECIP] > 3000 and counts[RAINE] > 3000  # both sites have a rain[e] gauge
    assert _all_rows(whole) == _all_rows(chunked)
    generate(other, start=START, end=end, sites=sites, seed=8)
    assert _rows(other, SOILMET) != _rows(whole, SOILMET)


def test_worker_processes_write_the_same_rows(tmp_path):
    one, two = _url(tmp_path, "one"), _url(tmp_path, "two")
    args = {"start": START, "end": START + timedelta(days=9), "sites": ["ALIC1", "HARTW"]}
    args["tables"] = [SOILMET, STATUS]
    assert generate(one, workers=1, **args) == generate(two, workers=2, **args)
    assert _all_rows(one, args["tables"]) == _all_rows(two, args["tables"])


def test_rerun_adds_nothing(tmp_path):
    url = _url(tmp_path)
    end = START + timedelta(hours=6)
    first = generate(url, start=START, end=end, sites=["BALRD"])
    again = generate(url, start=START, end=end, sites=["BALRD"])
    assert sum(first.values()) > 0
    assert again == {name: 0 for name in catalogue.TABLE_NAMES}
    assert len(_rows(url, PRECIP)) == first[PRECIP]


def test_a_site_does_not_depend_on_the_other_sites_selected(tmp_path):
    alone, crowd = _url(tmp_path, "alone"), _url(tmp_path, "crowd")
    end = START + timedelta(hours=12)
    generate(alone, start=START, end=end, sites=["GLENS"], tables=[SOILMET, PRECIP])
    clear_caches()
    generate(
        crowd, start=START, end=end, sites=["ALIC1", "GLENS", "WADDN"], tables=[SOILMET, PRECIP]
    )
    for table in (SOILMET, PRECIP):
        assert _rows(alone, table) == _rows(crowd, table, "GLENS")


def test_closed_sites_stop_and_unopened_sites_are_empty(tmp_path):
    url = _url(tmp_path)
    harwd = catalogue.get_site("HARWD")
    generate(
        url, start=harwd.end - timedelta(days=1), end=harwd.end + timedelta(days=1), sites=["HARWD"]
    )
    times = [r[1] for r in _rows(url, SOILMET)]
    assert times and max(times) <= harwd.end and max(times) > harwd.end - timedelta(hours=3)
    sydlg = catalogue.get_site("SYDLG")
    generate(
        url,
        start=sydlg.start - timedelta(days=1),
        end=sydlg.start + timedelta(hours=6),
        sites=["SYDLG"],
    )
    for table in (SOILMET, PRECIP, STATUS):
        times = [r[1] for r in _rows(url, table, "SYDLG")]
        assert times and min(times) > sydlg.start


def test_rows_look_like_cosmos(tmp_path):
    url = _url(tmp_path)
    sites = ["ALIC1", "MOORH", "LIZRD"]
    generate(url, start=START, end=START + timedelta(days=1), sites=sites)
    soil = _rows(url, SOILMET)
    ranges = {
        "TA": (-15, 35),
        "RH": (30, 100),
        "Q": (2, 20),
        "PA": (930, 1045),
        "SWIN": (-5, 1000),
        "SWOUT": (0, 300),
        "LWIN": (200, 450),
        "LWOUT": (250, 500),
        "WS": (0, 25),
        "WD": (0, 360),
        "PRECIP": (0, 30),
        "CTS_MOD": (200, 1500),
        "TDT1_VWC": (5, 60),
        "TDT2_VWC": (5, 60),
        "TDT1_TSOIL": (-3, 25),
        "STP_TSOIL50": (-3, 25),
        "G1": (-60, 120),
        "BATTV": (11.8, 14.5),
        "RHO_A_MEAN": (1.1, 1.35),
        "E_SAT_MEAN": (0.2, 5),
    }
    for name, (low, high) in ranges.items():
        values = _column(soil, SOILMET, name)
        assert np.isfinite(values).mean() > 0.9, name
        assert low <= np.nanmin(values) and np.nanmax(values) <= high, name
    assert set(_column(soil, SOILMET, "SCANS")) == {180}
    columns = catalogue.SOILMET_30MIN.column_names
    for site_id in sites:
        rows = [r for r in soil if r[0] == site_id]
        assert all(r[1].minute in (0, 30) and r[1].second == 0 for r in rows)
        record = _column(rows, SOILMET, "RECORD")
        minutes = np.array([(r[1] - START).total_seconds() / 60 for r in rows])
        assert np.array_equal(np.diff(record), np.diff(minutes) / 30)  # +1 per period
        assert all(isinstance(r[columns.index("CTS_MOD")], int | None) for r in rows)
        sentinel = set(_column(rows, SOILMET, "WM_NAN_COUNT")) == {WM_SENTINEL}
        assert sentinel == profile(site_id).wm_sentinel
    precip = _column(_rows(url, PRECIP), PRECIP, "P_INTENSITY_RT")
    assert np.nanmin(precip) >= 0 and np.nanmax(precip) <= 3 and np.nanmedian(precip) == 0
    nmdb = _rows(url, NMDB)
    by_time: dict[datetime, set] = {}
    for r in nmdb:
        by_time.setdefault(r[1], set()).add(r[2:])
    assert all(len(v) == 1 for v in by_time.values())  # one neutron monitor for every site
    assert {r[2] for r in nmdb} == {"JUNG"}
    status = _rows(url, STATUS)
    assert np.nanmin(_column(status, STATUS, "BATTERY")) >= 11.8
    assert all(r[1].minute == 0 for r in status)


def test_sensor_groups_a_site_lacks_are_null(tmp_path):
    url = _url(tmp_path)
    has_sonic = next(s for s in catalogue.SITE_IDS if not profile(s).lacks("sonic"))
    lacks_sonic = next(s for s in catalogue.SITE_IDS if profile(s).lacks("sonic"))
    generate(
        url,
        start=START,
        end=START + timedelta(hours=6),
        sites=[has_sonic, lacks_sonic],
        tables=[SOILMET],
    )
    rows = _rows(url, SOILMET)
    columns = catalogue.SOILMET_30MIN.column_names
    for site_id, expect_values in ((has_sonic, True), (lacks_sonic, False)):
        site_rows = [r for r in rows if r[0] == site_id]
        for name in SENSOR_GROUPS["sonic"]:
            present = any(r[columns.index(name)] is not None for r in site_rows)
            assert present == expect_values, (site_id, name)
    # Every column belongs to the core set or a group: no column is NULL everywhere by accident.
    grouped = {c for cols in SENSOR_GROUPS.values() for c in cols}
    core_rows = [r for r in rows if r[0] == lacks_sonic]
    for i, name in enumerate(columns):
        if name not in grouped:
            assert any(r[i] is not None for r in core_rows), name


def test_raine_only_at_its_sites(tmp_path):
    url = _url(tmp_path)
    sites = ["ALIC1", "BICKL", "GLENS", "SPENF"]
    generate(url, start=START, end=START + timedelta(hours=2), sites=sites, tables=[RAINE])
    found = {r[0] for r in _rows(url, RAINE)}
    assert found == {s for s in sites if s in RAINE_SITES} == {"ALIC1", "GLENS"}


def test_rain_wets_the_soil_and_neutrons_fall_as_it_does(tmp_path):
    url = _url(tmp_path)
    sites = ["ALIC1", "MOORH"]
    generate(url, start=START, end=START + timedelta(days=50), sites=sites, tables=[SOILMET])
    for site_id in sites:
        rows = _rows(url, SOILMET, site_id)
        rain, vwc = _column(rows, SOILMET, "PRECIP"), _column(rows, SOILMET, "TDT1_VWC")
        change = np.diff(vwc)
        wet, dry = rain[1:] > 0.5, rain[1:] == 0
        assert wet.sum() > 10
        assert np.nanmean(change[wet]) > 0.2 > 0 > np.nanmean(change[dry])
        counts = _column(rows, SOILMET, "CTS_MOD")
        pa, q = _column(rows, SOILMET, "PA"), _column(rows, SOILMET, "Q")
        ok = np.isfinite(counts) & np.isfinite(vwc) & np.isfinite(pa) & np.isfinite(q)
        corrected = counts * np.exp((pa - np.nanmean(pa)) / 130.0) * (1 + 0.0054 * (q - 7.0))
        assert np.corrcoef(counts[ok], vwc[ok])[0, 1] < -0.15
        k = ok.sum() // 24 * 24
        half_days = corrected[ok][:k].reshape(-1, 24).mean(1), vwc[ok][:k].reshape(-1, 24).mean(1)
        assert np.corrcoef(*half_days)[0, 1] < -0.6
        # Occasional gaps (RECORD jumps) and occasional NULLs, but rare.
        record = _column(rows, SOILMET, "RECORD")
        assert 0 < (np.diff(record) > 1).sum() < 0.05 * len(rows)
        assert 0 < np.isnan(_column(rows, SOILMET, "TA")).sum() < 0.01 * len(rows)
        # Deeper soil temperature swings less than the surface.
        assert np.nanstd(_column(rows, SOILMET, "STP_TSOIL50")) < 0.5 * np.nanstd(
            _column(rows, SOILMET, "STP_TSOIL2")
        )


def test_postgresql_gets_the_same_rows_as_sqlite(tmp_path, pg_url):
    lite = _url(tmp_path)
    args = {"start": START, "end": START + timedelta(hours=5), "sites": ["ALIC1", "BALRD"]}
    counts = generate(pg_url, **args)
    assert counts == generate(lite, **args)
    assert _all_rows(pg_url) == _all_rows(lite)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.SITES)).scalar() == 51
        indexes = sa.inspect(conn).get_indexes(SOILMET)
    engine.dispose()
    assert [ix["column_names"] for ix in indexes] == [["SITE_ID", "DATE_TIME"]]
    assert generate(pg_url, **args) == {name: 0 for name in catalogue.TABLE_NAMES}
    assert "2 sites" in summarise(pg_url)


class FakeClock:
    """Wall clock for follow mode that moves only when follow mode sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_follow_appends_exactly_the_next_rows(tmp_path):
    followed, reference = _url(tmp_path, "followed"), _url(tmp_path, "reference")
    sites = ["ALIC1", "HOLLN"]
    middle, end = START + timedelta(hours=3), START + timedelta(hours=4, minutes=30)
    first = generate(followed, start=START, end=middle, sites=sites)
    clock, steps = FakeClock(), []
    totals = follow(
        followed,
        sites=sites,
        start=middle,
        until=end,
        speed=600.0,
        clock=clock.time,
        sleep=clock.sleep,
        on_step=lambda when, counts: steps.append(when),
    )
    assert steps[0] == middle and steps[-1] == end and len(steps) == 91  # one per data minute
    assert all(s == pytest.approx(0.1) for s in clock.sleeps)  # a data minute at 600x
    clear_caches()
    expected = generate(reference, start=START, end=end, sites=sites)
    assert _all_rows(followed) == _all_rows(reference)
    assert {t: first[t] + totals[t] for t in expected} == expected


def test_readers_keep_reading_while_follow_mode_writes(tmp_path):
    url = _url(tmp_path)
    generate(url, start=START, end=START + timedelta(hours=1), sites=["ALIC1"], tables=[PRECIP])
    reader = sa.create_engine(url)
    clock = FakeClock()
    with reader.connect() as conn:
        count = sa.select(sa.func.count()).select_from(schema.sa_table(PRECIP))
        conn.exec_driver_sql("BEGIN")
        before = conn.execute(count).scalar()  # an open read transaction holds its snapshot
        totals = follow(
            url,
            sites=["ALIC1"],
            tables=[PRECIP],
            start=START + timedelta(hours=1),
            until=START + timedelta(hours=2),
            speed=600.0,
            clock=clock.time,
            sleep=clock.sleep,
        )
        assert totals[PRECIP] > 50 and conn.execute(count).scalar() == before
        conn.rollback()
        assert conn.execute(count).scalar() == before + totals[PRECIP]
    reader.dispose()


def test_follow_stops_on_its_bounds(tmp_path):
    url = _url(tmp_path)
    clock = FakeClock()
    totals = follow(
        url,
        sites=["ALIC1"],
        tables=[PRECIP],
        start=START,
        speed=60.0,
        max_rows=10,
        clock=clock.time,
        sleep=clock.sleep,
    )
    assert totals[PRECIP] == 10
    calls = []
    follow(
        url,
        sites=["ALIC1"],
        tables=[PRECIP],
        speed=60.0,
        start=START,
        stop=lambda: calls.append(1) or len(calls) >= 3,
        clock=clock.time,
        sleep=clock.sleep,
    )
    assert len(calls) == 3
    with pytest.raises(SampleError, match="speed"):
        follow(url, speed=0)


def test_cli_writes_and_summarises(tmp_path, capsys):
    url = _url(tmp_path)
    code = main(
        [
            "--url",
            url,
            "--end",
            "2026-03-10T06:00",
            "--days",
            "0.25",
            "--sites",
            "ALIC1,BALRD",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "LEVEL1_PRECIP_1MIN" in out and "rows written" in out
    text = summarise(url)
    assert "LEVEL1_SOILMET_30MIN" in text and "2 sites" in text and "2026-03-10 06:00" in text


def test_cli_start_and_days_give_the_range(tmp_path, capsys):
    url = _url(tmp_path)
    assert main(["--url", url, "--start", "2026-03-10", "--days", "0.5", "--sites", "LIZRD"]) == 0
    assert "2026-03-10 00:00 .. 2026-03-10 12:00" in capsys.readouterr().out
    times = [r[1] for r in _rows(url, STATUS)]
    assert min(times) == datetime(2026, 3, 10, 1) and max(times) == datetime(2026, 3, 10, 12)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sites", "NOPE1"], "unknown COSMOS site"),
        (["--tables", "NOT_A_TABLE"], "unknown COSMOS table"),
        (["--start", "2026-01-02", "--end", "2026-01-01"], "not after start"),
        (["--url", "nosuchdb://x/y"], "unsupported database URL"),
        (["--start", "yesterday"], "not a date/time"),
        (["--seed", "-1"], "seed"),
        (["--sites", ","], "no sites"),
        (["--start", "2026-01-01", "--end", "2026-01-02", "--days", "1"], "at most two"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    if "--url" not in args:
        args = ["--url", _url(tmp_path), *args]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--quiet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_console_script_reports_a_bad_url_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "iotswarm_pipelines.cosmos.sample.cli", "--url", "::::", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot parse the database URL" in result.stderr
