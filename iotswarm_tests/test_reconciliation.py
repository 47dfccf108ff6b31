"""The reconciliation rules and key ranges, without servers."""

from datetime import date, datetime, timedelta

import pytest

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import keys, reconcile, reconciliation
from iotswarm_pipelines.export.reconciliation import (
    TableDay,
    UnreadablePayloadError,
    compare_site,
)

AFTER, UNTIL = reconciliation.day_window(date(2024, 6, 1))


def t(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 6, day, hour, minute)


def test_a_day_is_midnight_exclusive_to_midnight_inclusive():
    assert reconciliation.day_window(date(2024, 6, 1)) == (
        datetime(2024, 6, 1),
        datetime(2024, 6, 2),
    )
    assert reconciliation.days_between(date(2024, 6, 30), date(2024, 7, 1)) == [
        date(2024, 6, 30),
        date(2024, 7, 1),
    ]
    with pytest.raises(ValueError, match="before --since"):
        reconciliation.days_between(date(2024, 6, 2), date(2024, 6, 1))


def test_key_stamps_parse_and_the_listing_start_skips_exactly_the_earlier_keys():
    folder = keys.site_folder("fdri/cosmos_swarm", "ALIC1", catalogue.SOILMET_30MIN)
    assert folder == "fdri/cosmos_swarm/ALIC1/LIVE_SOILMET_30MIN/"
    key = keys.object_key("fdri/cosmos_swarm", "ALIC1", catalogue.SOILMET_30MIN, t(0, 30), "x")
    assert keys.key_time_ms(key) == keys.epoch_ms(t(0, 30))
    assert keys.key_md5(key) == key[-32:]
    assert keys.key_time_ms(folder + "README") is None
    start = keys.start_after(folder, keys.epoch_ms(t(0, 30)))
    later = keys.object_key("fdri/cosmos_swarm", "ALIC1", catalogue.SOILMET_30MIN, t(0, 31), "y")
    assert key < start < later


def test_missing_found_twice_and_orphaned_rows_per_site():
    source = [t(0, 30), t(1), t(1, 30), t(2)]
    holdings = {
        "k1": (t(0, 30), t(1)),
        "k2": (t(1),),  # t(1) again: found twice
        "k3": (t(3),),  # the source no longer has it
        "k0": (datetime(2024, 5, 31, 23, 30), t(0, 30)),  # straddles midnight: only 00:30 counts
    }
    site = compare_site("ALIC1", AFTER, UNTIL, source, holdings, watermark=t(23))
    assert (site.rows, site.found) == (4, 2)
    assert site.missing == (t(1, 30), t(2))
    assert site.duplicated == {t(0, 30): ("k0", "k1"), t(1): ("k1", "k2")}
    assert site.orphaned == {"k3": (t(3),)}
    assert site.objects == 4 and not site.clean


def test_rows_after_the_watermark_are_pending_and_no_watermark_means_missing():
    source = [t(1), t(2), t(3)]
    site = compare_site("ALIC1", AFTER, UNTIL, source, {"k": (t(1),)}, watermark=t(2))
    assert (site.missing, site.pending) == ((t(2),), (t(3),))
    unseen = compare_site("ALIC1", AFTER, UNTIL, source, {}, watermark=None)
    assert (unseen.missing, unseen.pending) == ((t(1), t(2), t(3)), ())


def test_rows_outside_the_day_are_not_counted():
    source = [AFTER, t(12), UNTIL, UNTIL + timedelta(minutes=30)]
    site = compare_site("ALIC1", AFTER, UNTIL, source, {}, watermark=None)
    assert site.missing == (t(12), UNTIL)


def test_the_day_counts_add_up_and_heal_decides_completeness():
    a = compare_site("ALIC1", AFTER, UNTIL, [t(1), t(2)], {"k": (t(1), t(5))}, None)
    b = compare_site("BALRD", AFTER, UNTIL, [t(1)], {"x": (t(1),), "y": (t(1),)}, None)
    day = TableDay(table=catalogue.SOILMET_30MIN, day=AFTER.date(), sites=[a, b])
    counts = day.counts()
    assert {k: counts[k] for k in ("rows", "found", "missing", "duplicated", "orphaned")} == {
        "rows": 3,
        "found": 2,
        "missing": 1,
        "duplicated": 1,
        "orphaned": 1,
    }
    assert not day.complete
    assert day.problems()["ALIC1"]["missing"] == [t(2).isoformat()]
    day.healed = 1
    assert day.complete and day.counts()["missing_after_heal"] == 0


def test_a_failed_day_names_its_first_rows_at_fault_and_how_many_more():
    a = compare_site("ALIC1", AFTER, UNTIL, [t(h) for h in range(1, 6)], {"k": (t(9),)}, None)
    b = compare_site("BALRD", AFTER, UNTIL, [t(1)], {"x": (t(1),), "y": (t(1),)}, None)
    day = TableDay(table=catalogue.SOILMET_30MIN, day=AFTER.date(), sites=[a, b])
    assert reconcile.first_faults(day) == (
        "missing ALIC1 01:00:00, ALIC1 02:00:00, ALIC1 03:00:00 and 2 more; "
        "duplicated BALRD 01:00:00; orphaned ALIC1 09:00:00"
    )
    clean = compare_site("ALIC1", AFTER, UNTIL, [t(1)], {"k": (t(1),)}, None)
    assert reconcile.first_faults(TableDay(catalogue.SOILMET_30MIN, AFTER.date(), [clean])) == ""


def test_payload_rows_reads_the_station_and_times_of_a_stored_payload():
    rows = [
        {"SITE_ID": "ALIC1", "DATE_TIME": t(0, 30), "X": 1.5},
        {"SITE_ID": "ALIC1", "DATE_TIME": t(1), "X": None},
    ]
    text = payloads.payload_json(payloads.cr1000x_payload("ALIC1", rows))
    assert reconciliation.payload_rows(text.encode()) == ("ALIC1", (t(0, 30), t(1)))
    for bad in (
        b"not json",
        b"{}",
        b'{"head": {"environment": {"station_name": "A"}}, "data": []}',
    ):
        with pytest.raises(UnreadablePayloadError):
            reconciliation.payload_rows(bad)
