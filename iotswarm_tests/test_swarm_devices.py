"""Swarm device planning: names, topics, clones and shards (pure rules, no servers)."""

from __future__ import annotations

import pytest

from iotswarm_pipelines.swarm.devices import clone_counts, make_topic, plan_devices, split_shards
from iotswarm_pipelines.swarm.options import SwarmConfigError

SITES = ["ALIC1", "BALRD", "BICKL"]


def test_one_device_per_site_is_named_after_the_site():
    devices = plan_devices(SITES, prefix="fdri/cosmos", suffix="data")
    assert [d.device_id for d in devices] == SITES
    assert devices[0].topic == "fdri/cosmos/ALIC1/data"
    assert {d.site_id for d in devices} == set(SITES)


def test_topic_leaves_out_missing_prefix_and_suffix():
    assert make_topic("ALIC1") == "ALIC1"
    assert make_topic("ALIC1", prefix="a/b") == "a/b/ALIC1"
    assert make_topic("ALIC1", suffix="up") == "ALIC1/up"


def test_total_devices_are_spread_evenly_and_grouped_by_site():
    devices = plan_devices(SITES, devices=8)
    assert clone_counts(SITES, 8, None) == [3, 3, 2]
    assert [d.device_id for d in devices[:4]] == [
        "ALIC1-00001",
        "ALIC1-00002",
        "ALIC1-00003",
        "BALRD-00001",
    ]
    assert len({d.device_id for d in devices}) == 8


def test_per_site_clones_with_a_custom_template():
    devices = plan_devices(SITES, per_site=2, template="sim-{i}-{site}-{n}")
    assert [d.device_id for d in devices] == [
        "sim-0-ALIC1-1",
        "sim-1-ALIC1-2",
        "sim-2-BALRD-1",
        "sim-3-BALRD-2",
        "sim-4-BICKL-1",
        "sim-5-BICKL-2",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_site": 2, "template": "{site}-{x}"}, "unknown placeholder {x}"),
        ({"per_site": 2, "template": "{site}"}, "twice"),
        ({"per_site": 2, "template": "{site}-{n:q}"}, "cannot be formatted"),
        ({"per_site": 2, "template": "{site"}, "malformed"),
        ({"template": "${site}"}, "starts with '$'"),
        ({"template": "a/{site}"}, "cannot hold '/'"),
        ({"template": "{site} x"}, "spaces"),
        ({"template": "{site}" + "x" * 130}, "128 bytes"),
        ({"devices": 3, "per_site": 1}, "not both"),
        ({"devices": 0}, "at least 1"),
        ({"prefix": "a//b"}, "empty topic level"),
        ({"prefix": "/a"}, "empty topic level"),
        ({"suffix": "data/"}, "empty topic level"),
        ({"prefix": "a/+"}, "wildcard"),
        ({"suffix": "#"}, "wildcard"),
        ({"prefix": "$aws/things"}, "reserve"),
        ({"prefix": "a/b/c/d/e", "suffix": "f/g/h"}, "slashes"),
        ({"prefix": "p" * 251}, "256 bytes"),
    ],
)
def test_bad_names_and_topics_fail_with_a_clear_message(kwargs, message):
    with pytest.raises(SwarmConfigError, match=message.replace("$", r"\$").replace("+", r"\+")):
        plan_devices(SITES, **kwargs)


def test_seven_slashes_are_allowed():
    assert make_topic("ALIC1", prefix="a/b/c/d", suffix="e/f/g").count("/") == 7


def test_no_sites_is_an_error():
    with pytest.raises(SwarmConfigError, match="no sites"):
        plan_devices([])


@pytest.mark.parametrize(("count", "shards"), [(10, 3), (7, 7), (3, 5), (100, 8), (1, 1)])
def test_shards_are_balanced_contiguous_and_cover_every_device(count, shards):
    devices = plan_devices(["ALIC1"], devices=count)
    split = split_shards(devices, shards)
    sizes = [len(s) for s in split]
    assert len(split) == min(count, shards)
    assert max(sizes) - min(sizes) <= 1
    assert [d for s in split for d in s] == devices
    assert split == split_shards(devices, shards)  # deterministic


def test_zero_shards_is_an_error():
    with pytest.raises(SwarmConfigError, match="shards"):
        split_shards(plan_devices(SITES), 0)
