"""Swarm data modes and sources: CSV exports, the COSMOS database, payloads, replay timing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.swarm.data import (
    CosmosRows,
    CsvRows,
    HistoryCache,
    LatestCache,
    PayloadMemo,
    build_streams,
    encoder,
    read_csv_rows,
)
from iotswarm_pipelines.swarm.devices import plan_devices
from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.sessions import DevicePosition

SOILMET = catalogue.SOILMET_30MIN.name
REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
T0 = datetime(2024, 6, 1, 0, 30)


def write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A small SOILMET export: SITE_ID, DATE_TIME, TA (float), RECORD (integer)."""
    lines = ['"SITE_ID","DATE_TIME","TA","RECORD"'] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def history_csv(tmp_path) -> Path:
    """Site ALIC1 with five half-hourly rows (one a 90-minute gap), BALRD with two."""
    times = [T0 + timedelta(minutes=30 * k) for k in (0, 1, 2, 5, 6)]
    rows = [
        ("ALIC1", t.strftime("%d-%b-%y %H.%M.%S").upper(), f"{k}.5", str(k))
        for k, t in enumerate(times)
    ]
    rows += [
        ("BALRD", "2024-06-01T00:30:00", "-9999", "7"),
        ("BALRD", "2024-06-01T01:00:00", "", ""),
    ]
    return write_csv(tmp_path / "soilmet.csv", rows)


def times(messages) -> list[list[str]]:
    return [[d["time"] for d in json.loads(m.payload)["data"]] for m in messages]


def test_reference_csv_rows_follow_the_catalogue():
    rows = read_csv_rows(REFERENCE_CSV, catalogue.SOILMET_30MIN)
    assert len(rows) == 4
    first = rows[0]
    assert list(first) == [c for c in catalogue.SOILMET_30MIN.column_names if c in first]
    assert len(first) == len(catalogue.SOILMET_30MIN.columns)
    assert first["SITE_ID"] == "ALIC1"
    assert first["DATE_TIME"] == datetime(2024, 6, 1)  # this export kept only the date
    assert first["RECORD"] == 11153 and isinstance(first["RECORD"], int)
    assert first["SCANS"] == 180 and isinstance(first["SCANS"], int)
    assert first["TA"] == 12.34
    assert first["Q_STD"] is None
    assert first["WM_NAN_COUNT"] == 99999.99999
    assert [r["RECORD"] for r in rows] == [11153, 11154, 11155, 11156]  # file order kept


def test_csv_dates_sentinels_and_integers(history_csv):
    rows = read_csv_rows(history_csv, catalogue.SOILMET_30MIN)
    assert [r["DATE_TIME"] for r in rows[:2]] == [T0, T0 + timedelta(minutes=30)]
    assert rows[1] == {
        "SITE_ID": "ALIC1",
        "DATE_TIME": T0 + timedelta(minutes=30),
        "TA": 1.5,
        "RECORD": 1,
    }
    balrd = [r for r in rows if r["SITE_ID"] == "BALRD"]
    assert balrd[0]["DATE_TIME"] == T0 and balrd[0]["TA"] is None and balrd[0]["RECORD"] == 7
    assert balrd[1]["TA"] is None and balrd[1]["RECORD"] is None


def test_csv_with_a_bad_date_names_the_line(tmp_path):
    path = write_csv(
        tmp_path / "bad.csv",
        [("ALIC1", "01-JUN-24 00.30.00", "1", "1"), ("ALIC1", "yesterday", "1", "2")],
    )
    with pytest.raises(SwarmConfigError, match=r"line 3: DATE_TIME 'yesterday'"):
        read_csv_rows(path, catalogue.SOILMET_30MIN)


def test_csv_of_another_table_is_refused(history_csv):
    with pytest.raises(SwarmConfigError, match="not in LEVEL1_PRECIP_1MIN"):
        read_csv_rows(history_csv, catalogue.PRECIP_1MIN)


def test_loop_walks_history_in_order_and_wraps(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    (stream,) = build_streams(
        plan_devices(["ALIC1"]), source, mode="loop", device_type="cr1000x", sleep_time=7
    )
    messages = [stream.next_message() for _ in range(7)]
    first_times = [t[0] for t in times(messages)]
    assert first_times[:5] == [
        "2024-06-01T00:30:00.000000",
        "2024-06-01T01:00:00.000000",
        "2024-06-01T01:30:00.000000",
        "2024-06-01T03:00:00.000000",
        "2024-06-01T03:30:00.000000",
    ]
    assert first_times[5:] == first_times[:2]
    assert {m.wait_after for m in messages} == {7}
    assert stream.cycles == 7 and stream.last_time == T0 + timedelta(minutes=30)


def test_loop_batches_never_span_the_wrap(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    (stream,) = build_streams(
        plan_devices(["ALIC1"]), source, mode="loop", device_type="cr1000x", rows_per_message=2
    )
    sizes = [len(t) for t in times(stream.next_message() for _ in range(4))]
    assert sizes == [2, 2, 1, 2]


def test_loop_reads_chunks_once_for_clones_across_chunk_boundaries(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    streams = build_streams(
        plan_devices(["ALIC1"], per_site=20), source, mode="loop", device_type="basic", chunk_rows=2
    )
    sent = [[json.loads(s.next_message().payload)["RECORD"] for s in streams] for _ in range(6)]
    assert sent == [[k] * 20 for k in (0, 1, 2, 3, 4, 0)]
    cache: HistoryCache = streams[0]._cache
    assert cache.queries == 3  # rows 0-1, 2-3, 4 (short: the end), then 0-1 again from cache


def test_clones_and_laps_reuse_a_payload_built_once(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    built = []

    def encode(station, rows):
        built.append((station, [r["RECORD"] for r in rows]))
        return encoder("cr1000x")(station, rows)

    memo = PayloadMemo(encode)
    rows = source.rows_after("ALIC1", None, 5)
    first = [memo("ALIC1", [row]) for row in rows]
    again = [memo("ALIC1", [row]) for row in rows]  # a clone, or the next lap of a loop
    assert again == first == [encoder("cr1000x")("ALIC1", [row]) for row in rows]
    assert built == [("ALIC1", [k]) for k in range(5)]
    memo("ALIC1", [dict(rows[0])])  # equal but re-read: it may have changed, so built again
    memo("BALRD", [rows[0]])  # another station
    memo("ALIC1", rows[:2])  # another batch
    assert built[5:] == [("ALIC1", [0]), ("BALRD", [0]), ("ALIC1", [0, 1])]


def test_payload_memo_stays_within_its_budget(history_csv):
    rows = CsvRows(history_csv, catalogue.SOILMET_30MIN).rows_after("ALIC1", None, 5)
    size = len(encoder("cr1000x")("ALIC1", [rows[0]]))
    built = []

    def encode(station, batch):
        built.append(batch[0]["RECORD"])
        return encoder("cr1000x")(station, batch)

    memo = PayloadMemo(encode, budget=2 * size + size // 2)  # room for two payloads
    for row in (rows[0], rows[1], rows[2], rows[0]):
        memo("ALIC1", [row])
    assert built == [0, 1, 2, 0]  # row 0 was dropped (least recently used) and built again


def test_replay_waits_follow_the_timestamps_divided_by_speed(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    (stream,) = build_streams(
        plan_devices(["ALIC1"]), source, mode="replay", device_type="cr1000x", speed=48
    )
    messages = []
    while (message := stream.next_message()) is not None:
        messages.append(message)
    assert [m.wait_after for m in messages] == [37.5, 37.5, 112.5, 37.5, 0.0]
    assert len(messages) == 5  # replay stops at the end of the history


def test_replay_resumes_after_the_saved_position(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    position = DevicePosition(last_time=T0 + timedelta(minutes=30), cycles=2)
    (stream,) = build_streams(
        plan_devices(["ALIC1"]),
        source,
        mode="replay",
        device_type="cr1000x",
        speed=2,
        positions={"ALIC1": position},
    )
    message = stream.next_message()
    assert times([message]) == [["2024-06-01T01:30:00.000000"]]
    assert message.wait_after == 90 * 60 / 2
    assert stream.cycles == 3


def test_cr1000x_station_is_the_site_also_for_clones(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    streams = build_streams(
        plan_devices(["ALIC1"], per_site=2), source, mode="loop", device_type="cr1000x"
    )
    payload = json.loads(streams[1].next_message().payload)
    assert payload["head"]["environment"]["station_name"] == "ALIC1"
    assert streams[1].topic == "ALIC1-00002"
    assert [f["name"] for f in payload["head"]["fields"]] == ["SITE_ID", "TA", "RECORD"]
    assert payload["data"][0]["vals"] == ["ALIC1", 0.5, 0]


def test_basic_payload_is_the_row(history_csv):
    source = CsvRows(history_csv, catalogue.SOILMET_30MIN)
    (stream,) = build_streams(
        plan_devices(["BALRD"]), source, mode="latest", device_type="basic", sleep_time=3
    )
    message = stream.next_message()
    assert json.loads(message.payload) == {
        "SITE_ID": "BALRD",
        "DATE_TIME": "2024-06-01T01:00:00.000000",
        "TA": None,
        "RECORD": None,
    }
    assert message.wait_after == 3


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory) -> str:
    from iotswarm_pipelines.cosmos.sample import generate

    url = f"sqlite:///{tmp_path_factory.mktemp('swarm-data') / 'cosmos.sqlite'}"
    generate(
        url,
        start=T0,
        end=T0 + timedelta(hours=6),
        sites=["ALIC1", "BALRD", "BICKL"],
        tables=[SOILMET],
    )
    return url


def test_latest_mode_queries_the_database_once_per_shard_cycle(sample_db):
    source = CosmosSource(url=sample_db)
    rows = CosmosRows(source, catalogue.SOILMET_30MIN)
    streams = build_streams(
        plan_devices(rows.sites(), per_site=30),
        rows,
        mode="latest",
        device_type="cr1000x",
        sleep_time=600,
    )
    newest = source.newest_times(SOILMET)
    for stream in streams:
        stream.next_message()
        assert stream.last_time == newest[stream.site_id]
    cache: LatestCache = streams[0]._cache
    assert cache.queries == 1
    assert len(streams) == 90


def test_loop_over_the_database_matches_its_history(sample_db):
    source = CosmosSource(url=sample_db)
    rows = CosmosRows(source, catalogue.SOILMET_30MIN)
    history = [r["DATE_TIME"] for r in source.rows_after(SOILMET, "BALRD", None)]
    (stream,) = build_streams(
        plan_devices(["BALRD"]), rows, mode="loop", device_type="cr1000x", chunk_rows=5
    )
    walked = []
    for _ in range(len(history) + 2):
        stream.next_message()
        walked.append(stream.last_time)
    assert len(history) == 12
    assert walked == history + history[:2]
