"""The pure rules of how far a watermark may move and how rows become payloads."""

from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.export.watermarks import (
    SiteProgress,
    aligned_batches,
    batch_rows,
    batch_window,
    bucket_end,
    newest_time,
    replay_may_advance,
    safe_watermark,
)

T0 = datetime(2024, 6, 1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rows(site: str, *minutes: int) -> list[dict]:
    return [{"SITE_ID": site, "DATE_TIME": at(m), "X": m} for m in minutes]


def test_safe_watermark_stops_at_the_first_gap():
    times = [at(1), at(2), at(3), at(4)]
    assert safe_watermark(times, [True, True, False, True]) == at(2)
    assert safe_watermark(times, [True] * 4) == at(4)
    assert safe_watermark(times, [False, True, True, True]) is None
    assert safe_watermark([], []) is None


def test_safe_watermark_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one entry per payload"):
        safe_watermark([at(1)], [])


def test_batches_never_mix_sites_and_respect_the_size():
    data = rows("ALIC1", 1, 2, 3, 4, 5) + rows("BALRD", 6, 7)
    batches = list(batch_rows(iter(data), 2))
    assert [[r["X"] for r in b] for b in batches] == [[1, 2], [3, 4], [5], [6, 7]]
    assert all(len({r["SITE_ID"] for r in b}) == 1 for b in batches)


def test_batch_size_one_gives_one_payload_per_row():
    assert len(list(batch_rows(iter(rows("ALIC1", 1, 2, 3)), 1))) == 3


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        list(batch_rows(iter([]), 0))


def test_batching_streams_without_reading_ahead():
    consumed = []

    def source():
        for row in rows("ALIC1", *range(1000)):
            consumed.append(row)
            yield row

    first = next(batch_rows(source(), 10))
    assert len(first) == 10
    assert len(consumed) == 11  # the 11th row is what showed the batch was full


def test_newest_time_is_the_latest_row():
    assert newest_time(rows("ALIC1", 5, 2, 9, 1)) == at(9)


def test_progress_follows_the_stored_prefix_in_any_completion_order():
    progress = SiteProgress()
    seqs = [progress.sent() for _ in range(4)]
    progress.stored(seqs[2], at(3))
    progress.stored(seqs[1], at(2))
    assert progress.watermark is None  # payload 0 still in flight
    progress.stored(seqs[0], at(1))
    assert progress.watermark == at(3)
    progress.stored(seqs[3], at(4))
    assert progress.watermark == at(4)


def test_a_failure_freezes_the_watermark_at_the_gap():
    progress = SiteProgress()
    seqs = [progress.sent() for _ in range(4)]
    progress.stored(seqs[0], at(1))
    progress.failed_at(seqs[1])
    progress.stored(seqs[2], at(3))
    progress.stored(seqs[3], at(4))
    assert progress.failed
    assert progress.watermark == at(1)


def test_replay_may_advance_only_from_at_or_before_the_watermark():
    assert replay_may_advance(None, at(5))
    assert replay_may_advance(at(5), at(5))
    assert replay_may_advance(at(10), at(5))
    assert not replay_may_advance(at(5), at(10))


def test_payloads_before_a_failure_still_count_when_they_finish_after_it():
    progress = SiteProgress()
    seqs = [progress.sent() for _ in range(4)]
    progress.failed_at(seqs[2])
    progress.stored(seqs[3], at(4))
    progress.stored(seqs[1], at(2))
    assert progress.watermark is None
    progress.stored(seqs[0], at(1))
    assert progress.watermark == at(2)
    progress.failed_at(seqs[3])  # a later failure does not move the gap
    assert progress.watermark == at(2)


def test_aligned_batches_hold_back_an_open_bucket_and_align_to_the_cadence():
    half = timedelta(minutes=30)
    # A day of 48 half-hours is (00:00, 24:00]: midnight ends the day before.
    assert bucket_end(datetime(2024, 6, 1, 12), half * 48) == datetime(2024, 6, 2)
    assert bucket_end(datetime(2024, 6, 2), half * 48) == datetime(2024, 6, 2)
    day = [datetime(2024, 6, 1) + half * i for i in range(1, 50)]  # 00:30 .. 24:30
    data = [{"SITE_ID": "ALIC1", "DATE_TIME": t} for t in day]
    newest = {"ALIC1": day[-1]}
    # 00:30 .. 03:30 in 7 half-hours from the epoch: boundaries depend on the times alone.
    sizes = [len(b) for b in aligned_batches(iter(data), 7, half, newest)]
    assert sum(sizes) < len(data) and max(sizes) <= 7
    whole = list(aligned_batches(iter(data[:48]), 48, half, {"ALIC1": day[47]}))
    assert [len(b) for b in whole] == [48]  # closed by the row that ends it (24:00)
    assert list(aligned_batches(iter(data[:47]), 48, half, {"ALIC1": day[46]})) == []  # open
    later = list(aligned_batches(iter(data[:47]), 48, half, {"ALIC1": day[48]}))
    assert [len(b) for b in later] == [47]  # closed: the site has a row after it


def test_batch_window_widens_a_day_to_the_aligned_payloads_that_hold_its_rows():
    half = timedelta(minutes=30)
    day = (datetime(2024, 6, 1), datetime(2024, 6, 2))
    assert batch_window(*day, 1, half) == day
    assert batch_window(*day, 48, half) == day  # a day of half-hours is one aligned payload
    after, until = batch_window(*day, 7, half)  # 3.5 h payloads straddle midnight
    assert after < day[0] < after + 7 * half and until - 7 * half < day[1] < until
    times = [after + half * (n + 1) for n in range(int((until - after) / half))]
    data = [{"SITE_ID": "ALIC1", "DATE_TIME": t} for t in times]
    batches = list(aligned_batches(iter(data), 7, half, {"ALIC1": until}))
    assert all(len(batch) == 7 for batch in batches)  # whole payloads, none cut by the window
