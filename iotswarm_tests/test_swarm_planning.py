"""Swarm planning: pure rules from options, the source's sites and a saved session (no servers)."""

from __future__ import annotations

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.swarm.options import SwarmConfigError, SwarmOptions
from iotswarm_pipelines.swarm.planning import make_spec, plan
from iotswarm_pipelines.swarm.sessions import DevicePosition, Session

AVAILABLE = ["ALIC1", "BALRD", "CHIMN"]


def test_clones_are_split_over_the_shards_with_the_checked_options():
    swarm = plan(make_spec(SwarmOptions(per_site=2, shards=2, qos=0), "night"), AVAILABLE)
    assert swarm.sites == AVAILABLE and swarm.devices == 6
    assert [len(s.devices) for s in swarm.shards] == [3, 3]
    assert swarm.spec.swarm_name == "night" and swarm.spec.options.qos == 0
    assert swarm.spec.table is catalogue.SOILMET_30MIN


def test_a_resumed_session_gives_each_device_its_saved_position():
    saved = Session("night", "LEVEL1_SOILMET_30MIN", "loop", {"BALRD": DevicePosition(cycles=4)})
    options = SwarmOptions(mode="loop", swarm_name="night", resume_session=True)
    swarm = plan(make_spec(options, "night"), AVAILABLE, saved)
    assert swarm.resumed == 1
    assert swarm.shards[0].positions == {"BALRD": DevicePosition(cycles=4)}


def test_a_session_of_another_mode_is_refused_in_one_line():
    saved = Session("night", "LEVEL1_SOILMET_30MIN", "replay", {})
    options = SwarmOptions(mode="loop", swarm_name="night", resume_session=True)
    with pytest.raises(SwarmConfigError, match="saved for LEVEL1_SOILMET_30MIN in replay mode"):
        plan(make_spec(options, "night"), AVAILABLE, saved)


def test_chosen_sites_must_have_rows_in_the_source():
    with pytest.raises(SwarmConfigError, match=r"site\(s\) BUNNY have no rows"):
        plan(make_spec(SwarmOptions(sites=["ALIC1", "bunny"]), "night"), AVAILABLE)
