"""historicData payloads: every row once, in order, no message over the limit, each message the
device's own payload for its rows (pure, no broker)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from iotswarm_pipelines import payloads
from iotswarm_pipelines.swarm.control.historic import messages
from iotswarm_tests.control_fixtures import FORMAT, History

ROWS = History(["ALIC1"]).rows["ALIC1"]


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 300), limit=st.integers(3_000, 140_000))
def test_rows_once_in_order_within_the_limit(count, limit):
    rows = ROWS[:count]
    bodies = messages("ALIC1", rows, FORMAT, limit=limit)
    times = [r["time"] for body in bodies for r in json.loads(body)["data"]]
    assert times == [payloads.format_time(r["DATE_TIME"]) for r in rows]
    # over the limit only a message of one row, which no split can make smaller
    assert all(len(b) <= limit or len(json.loads(b)["data"]) == 1 for b in bodies)
    taken = 0
    for body in bodies:  # each is exactly what the device would publish for those rows
        n = len(json.loads(body)["data"])
        expected = payloads.payload_json(
            payloads.cr1000x_payload("ALIC1", rows[taken : taken + n], FORMAT)
        )
        assert body == expected.encode()
        taken += n


def test_a_row_larger_than_the_limit_goes_alone():
    rows = ROWS[:3]
    bodies = messages("ALIC1", rows, FORMAT, limit=100)
    assert [len(json.loads(b)["data"]) for b in bodies] == [1, 1, 1]


def test_no_rows_and_no_template_still_answers_json():
    (body,) = messages("ALIC1", [], FORMAT)
    assert json.loads(body)["data"] == []
