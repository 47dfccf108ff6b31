"""S3 object keys: the reference example, the table folders, and keys that depend on content."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.keys import epoch_ms, object_key

FOX = "The quick brown fox jumps over the lazy dog"


def test_reference_example():
    key = object_key(
        "fdri/cosmos_swarm", "ALIC1", catalogue.SOILMET_30MIN, datetime(2024, 6, 1, 0, 30), FOX
    )
    assert key == (
        "fdri/cosmos_swarm/ALIC1/LIVE_SOILMET_30MIN/1717201800000-9e107d9d372bb6826bd81d3542a419d6"
    )


def test_text_and_its_bytes_give_the_same_key():
    when = datetime(2024, 6, 1, 0, 30)
    text = object_key("p", "ALIC1", catalogue.SOILMET_30MIN, when, FOX)
    assert object_key("p", "ALIC1", catalogue.SOILMET_30MIN, when, FOX.encode()) == text


def test_status_table_keeps_its_name():
    key = object_key("p", "ALIC1", catalogue.STATUS_1HOUR, datetime(2024, 6, 1), "{}")
    assert key.split("/")[2] == "LIVE_COSMOS_STATUS_1HOUR"


@pytest.mark.parametrize("prefix", ["", "/", "//"])
def test_empty_prefix_has_no_leading_slash(prefix):
    key = object_key(prefix, "ALIC1", catalogue.PRECIP_1MIN, datetime(2024, 6, 1), "{}")
    assert key.startswith("ALIC1/LIVE_PRECIP_1MIN/1717200000000-")


def test_prefix_slashes_are_not_doubled():
    key = object_key(
        "fdri/cosmos_swarm/", "ALIC1", catalogue.NMDB_1HOUR, datetime(2024, 6, 1), "{}"
    )
    assert key.startswith("fdri/cosmos_swarm/ALIC1/LIVE_NMDB_1HOUR/")


def test_timestamp_is_always_13_digits():
    key = object_key("", "ALIC1", catalogue.NMDB_1HOUR, datetime(2000, 1, 1), "{}")
    assert key.split("/")[-1].split("-")[0] == "0946684800000"


def test_naive_time_is_utc_and_milliseconds_are_kept():
    when = datetime(2024, 6, 1, 0, 30, 0, 123456)
    assert epoch_ms(when) == int(when.replace(tzinfo=UTC).timestamp() * 1000)


def test_tz_aware_time_is_refused():
    with pytest.raises(ValueError, match="tz-aware"):
        object_key("", "ALIC1", catalogue.NMDB_1HOUR, datetime(2024, 6, 1, tzinfo=UTC), "{}")


@given(
    table=st.sampled_from(list(catalogue.TABLES.values())),
    when=st.datetimes(min_value=datetime(2001, 9, 10), max_value=datetime(2286, 11, 20)),
    a=st.text(),
    b=st.text(),
)
def test_same_payload_same_key_different_payload_different_key(table, when, a, b):
    key_a = object_key("p", "ALIC1", table, when, a)
    assert key_a == object_key("p", "ALIC1", table, when, a)
    assert (key_a == object_key("p", "ALIC1", table, when, b)) == (a == b)
    assert len(key_a.rsplit("/", 1)[1]) == 13 + 1 + 32


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 4094, 100_000])
def test_md5_is_of_the_whole_body_whatever_its_size(size):
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    key = object_key("", "ALIC1", catalogue.NMDB_1HOUR, datetime(2024, 6, 1), body)
    assert key.endswith("-" + hashlib.md5(body).hexdigest())
