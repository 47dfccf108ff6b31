"""export_table against real databases, real object stores and real state files."""

import json
import logging
import pickle
import re
from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import keys
from iotswarm_pipelines.export.pipeline import (
    PROGRESS_LOGGER,
    ExportError,
    ExportSummary,
    export_table,
    export_window,
)
from iotswarm_pipelines.export.state import advance, empty_state
from iotswarm_pipelines.export.summary_text import format_size, format_summary
from iotswarm_tests.export_fixtures import (
    PREFIX,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    s3_store,
    source,
    state_store,
)

NOW = datetime(2024, 6, 2, 12, 0)
KEY = re.compile(rf"^{PREFIX}/(ALIC1|BALRD)/LIVE_SOILMET_30MIN/(\d{{13}})-([0-9a-f]{{32}})$")


def half_hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=30 * i) for i in range(count)]


def seed(url: str, start: datetime, count: int, sites=("ALIC1", "BALRD")) -> None:
    for site in sites:
        insert_rows(url, SOILMET, make_rows(SOILMET, site, half_hours(start, count)))


def run(url, store, state, **kwargs):
    return export_table(
        catalogue.SOILMET_30MIN, source=source(url), store=store, state=state, now=NOW, **kwargs
    )


def times_of(store) -> dict[str, list[datetime]]:
    """Each site's row times, read back from the stored payloads."""
    found: dict[str, list[datetime]] = {}
    for key in store.list_keys():
        payload = json.loads(store.get(key))
        site = payload["head"]["environment"]["station_name"]
        found.setdefault(site, []).extend(
            datetime.fromisoformat(row["time"]) for row in payload["data"]
        )
    return {site: sorted(times) for site, times in found.items()}


def test_first_run_starts_fallback_hours_back_and_second_run_sends_only_new_rows(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=10), 21)  # 02:00 .. 12:00

    first = run(cosmos_url, local_objects, local_state, fallback_hours=3)

    expected = half_hours(NOW - timedelta(hours=2, minutes=30), 6)  # after 09:00, up to 12:00
    assert times_of(local_objects) == {"ALIC1": expected, "BALRD": expected}
    assert (first.rows_read, first.payloads_built, first.objects_stored) == (12, 12, 12)
    assert first.watermarks == {"ALIC1": NOW, "BALRD": NOW}
    assert first.sites_advanced == 2 and first.failed == 0
    assert local_state.load(SOILMET)["sites"]["ALIC1"] == {"site_id": "ALIC1", "last_data": NOW}

    seed(cosmos_url, NOW + timedelta(minutes=30), 2, sites=("ALIC1",))
    second = run(cosmos_url, local_objects, local_state, fallback_hours=3)

    assert second.rows_read == 2
    assert second.watermarks == {"ALIC1": NOW + timedelta(hours=1), "BALRD": NOW}
    assert second.sites_advanced == 1
    assert len(local_objects.list_keys()) == 14
    assert second.lag_seconds == 0


def test_keys_follow_the_reference_format(cosmos_url, local_objects, local_state):
    seed(cosmos_url, NOW - timedelta(hours=1), 3, sites=("ALIC1",))
    run(cosmos_url, local_objects, local_state)
    for key in local_objects.list_keys():
        site, stamp, _ = KEY.match(key).groups()
        body = local_objects.get(key)
        payload = json.loads(body)
        newest = max(datetime.fromisoformat(r["time"]) for r in payload["data"])
        assert int(stamp) == keys.epoch_ms(newest)
        assert key == keys.object_key(PREFIX, site, catalogue.SOILMET_30MIN, newest, body)
        assert payload["head"]["environment"]["serial_no"] == "65-76-73-67-49"


def test_batches_hold_batch_size_rows_of_one_site(cosmos_url, local_objects, local_state):
    seed(cosmos_url, NOW - timedelta(hours=3), 7)
    summary = run(cosmos_url, local_objects, local_state, batch_size=3, fallback_hours=4)
    assert (summary.rows_read, summary.payloads_built) == (14, 6)  # 3 + 3 + 1 per site
    sizes = sorted(len(json.loads(local_objects.get(k))["data"]) for k in local_objects.list_keys())
    assert sizes == [1, 1, 3, 3, 3, 3]
    for key in local_objects.list_keys():
        payload = json.loads(local_objects.get(key))
        assert {row["vals"][0] for row in payload["data"]} == {
            payload["head"]["environment"]["station_name"]
        }


def test_replay_resends_a_window_on_the_same_keys_and_never_moves_watermarks_back(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=10), 21)
    run(cosmos_url, local_objects, local_state, fallback_hours=3)
    before = local_objects.list_keys()

    replay = run(
        cosmos_url,
        local_objects,
        local_state,
        since=NOW - timedelta(hours=2),
        until=NOW - timedelta(hours=1),
    )
    assert replay.rows_read == 4  # 10:30, 11:00 per site
    assert local_objects.list_keys() == before  # same keys: overwritten, nothing duplicated
    assert replay.watermarks == {"ALIC1": NOW, "BALRD": NOW}

    older = run(
        cosmos_url,
        local_objects,
        local_state,
        since=NOW - timedelta(hours=10),
        until=NOW - timedelta(hours=6),
    )
    assert older.rows_read == 16
    assert len(local_objects.list_keys()) == len(before) + 16
    assert local_state.load(SOILMET)["sites"]["ALIC1"]["last_data"] == NOW


def test_replay_that_starts_after_a_watermark_does_not_jump_over_unsent_rows(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=10), 21)
    local_state.save(SOILMET, {"last_run": NOW, "sites": {}})
    run(
        cosmos_url,
        local_objects,
        local_state,
        until=NOW - timedelta(hours=5),
        since=NOW - timedelta(hours=6),
    )
    assert local_state.load(SOILMET)["sites"] == {
        site: {"site_id": site, "last_data": NOW - timedelta(hours=5)}
        for site in ("ALIC1", "BALRD")
    }  # never seen: the replay is their first export
    replay = run(cosmos_url, local_objects, local_state, since=NOW - timedelta(hours=2))
    assert replay.rows_read == 8
    assert replay.sites_advanced == 0  # 07:00 .. 10:00 were never sent
    assert replay.watermarks["ALIC1"] == NOW - timedelta(hours=5)


def test_dry_run_counts_payloads_and_writes_nothing(
    tmp_path, cosmos_url, local_objects, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=2), 5)
    summary = run(cosmos_url, local_objects, local_state, dry_run=True, batch_size=2)
    assert (summary.rows_read, summary.payloads_built, summary.objects_stored) == (10, 6, 0)
    assert summary.dry_run and summary.watermarks == {}
    assert local_objects.list_keys() == []
    assert not (tmp_path / "state").exists()


def test_a_failed_payload_stops_its_site_at_the_gap_and_fails_the_run(
    tmp_path, local_objects, cosmos_url, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=2), 5)  # 10:00 .. 12:00
    probe = local_store(tmp_path / "probe")
    run(cosmos_url, probe, state_store(tmp_path / "probe"))
    blocked = [k for k in probe.list_keys() if "/ALIC1/" in k][2]  # ALIC1's 11:00 payload
    (tmp_path / "objects" / blocked).mkdir(parents=True)  # a folder where the object must go

    with pytest.raises(ExportError, match="1 of 10 payloads were not stored"):
        run(cosmos_url, local_objects, local_state)
    sites = local_state.load(SOILMET)["sites"]
    assert sites["ALIC1"]["last_data"] == NOW - timedelta(hours=1, minutes=30)
    assert sites["BALRD"]["last_data"] == NOW

    (tmp_path / "objects" / blocked).rmdir()
    retry = run(cosmos_url, local_objects, local_state)
    assert retry.rows_read == 3 and retry.failed == 0
    assert sorted(local_objects.list_keys()) == sorted(probe.list_keys())


def test_postgresql_source_to_s3(tmp_path, pg_url, s3_endpoint, aws_test_credentials):
    store, state = s3_store(s3_endpoint), state_store(tmp_path)
    seed(pg_url, NOW - timedelta(hours=1), 3)
    summary = run(pg_url, store, state, batch_size=2)
    assert (summary.rows_read, summary.objects_stored) == (6, 4)
    assert all(KEY.match(k) for k in store.list_keys())
    assert times_of(store)["BALRD"] == half_hours(NOW - timedelta(hours=1), 3)
    assert run(pg_url, store, state).rows_read == 0


def test_export_window_resends_one_day_without_touching_the_state(
    tmp_path, cosmos_url, local_objects
):
    seed(cosmos_url, datetime(2024, 6, 1), 49)  # 2024-06-01 00:00 .. 2024-06-02 00:00
    day = export_window(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        sites=["ALIC1"],
        after=datetime(2024, 6, 1),
        until=datetime(2024, 6, 2),
    )
    assert (day.rows_read, day.sites) == (48, 1)  # midnight at the start ends the day before
    assert times_of(local_objects)["ALIC1"][-1] == datetime(2024, 6, 2)
    assert not (tmp_path / "state").exists()


def test_state_files_of_the_old_uploader_are_picked_up(
    tmp_path, cosmos_url, local_objects, local_state
):
    seed(cosmos_url, NOW - timedelta(hours=10), 21)
    mark = NOW - timedelta(hours=1)
    old = {"last_run": mark, "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": mark}}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "LEVEL_1_SOILMET_30MIN.pickle").write_bytes(pickle.dumps(old))
    summary = run(cosmos_url, local_objects, local_state, fallback_hours=0.5)
    assert summary.rows_read == 2 + 1  # ALIC1 after its old watermark; BALRD after 11:30
    assert (tmp_path / "state" / f"{SOILMET}.pickle").exists()
    assert local_state.load(SOILMET)["sites"]["ALIC1"]["last_data"] == NOW


def test_every_table_exports_and_prints_its_summary(cosmos_url, local_objects, local_state):
    for table in catalogue.TABLE_NAMES:
        insert_rows(cosmos_url, table, make_rows(table, "ALIC1", [datetime(2020, 1, 1)]))
    summaries = [
        export_table(
            t,
            source=source(cosmos_url),
            store=local_objects,
            state=local_state,
            fallback_hours=None,
        )
        for t in catalogue.TABLES.values()
    ]
    assert [(s.table, s.objects_stored) for s in summaries] == [
        (t, 1) for t in catalogue.TABLES.values()
    ]
    text = format_summary(summaries[0], local_objects.describe())
    assert text.splitlines() == [
        f"{SOILMET}: 1 rows, 1 payloads, 1 objects ({format_size(summaries[0].bytes_stored)}) -> "
        + local_objects.describe(),
        "  watermarks moved at 1 of 1 sites (lag 0 s):",
        "    ALIC1  2020-01-01 00:00:00",
    ]
    # nothing new: no site listed
    again = export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        state=local_state,
        fallback_hours=None,
    )
    assert format_summary(again).splitlines()[1:] == [
        "  no watermark moved: nothing new at 1 sites"
    ]


def test_the_run_announces_how_many_rows_it_expects_before_reading_them(
    cosmos_url, local_objects, local_state
):
    """The progress bar's total and time left: exact when the source has no gaps."""
    times = [NOW - timedelta(minutes=30 * i) for i in range(4)]
    for site in ("ALIC1", "BALRD"):
        insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, site, times))
    local_state.save(SOILMET, advance(empty_state(), {"ALIC1": times[1]}))  # one row left to send
    announced: list[int] = []

    class Listener(logging.Handler):
        def emit(self, record):
            if hasattr(record, "expected_rows"):
                announced.append(record.expected_rows)

    logger = logging.getLogger(PROGRESS_LOGGER)
    listener = Listener()
    logger.addHandler(listener)
    logger.setLevel(logging.DEBUG)
    try:
        summary = run(cosmos_url, local_objects, local_state, fallback_hours=3)
    finally:
        logger.removeHandler(listener)
    assert announced == [summary.rows_read] == [1 + 4]


def test_sizes_print_for_a_person():
    assert [format_size(n) for n in (512, 1536, 5 * 1024**2, 3 * 1024**4)] == [
        "512 bytes",
        "1.5 KiB",
        "5.0 MiB",
        "3072.0 GiB",
    ]


def test_printed_summary_shows_at_most_max_sites_watermarks():
    summary = ExportSummary(
        table=catalogue.SOILMET_30MIN,
        sites=3,
        watermarks={s: datetime(2020, 1, 1) for s in ("ALIC1", "BALRD", "BICKL", "CARDT")},
        advanced=("ALIC1", "BALRD", "BICKL"),
    )
    lines = format_summary(summary, max_sites=2).splitlines()
    assert lines[2:] == [
        "    ALIC1  2020-01-01 00:00:00",
        "    BALRD  2020-01-01 00:00:00",
        "    ... and 1 more sites",
    ]
