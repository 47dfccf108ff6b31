"""One builder of the export's stores, and one start rule, for every caller (no servers)."""

from __future__ import annotations

from datetime import datetime

import pytest

from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.state_s3 import S3StateStore
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.stores import Destination, build_stores

NOW = datetime(2024, 6, 2, 12, 0)


def test_a_folder_and_state_files(tmp_path):
    stores = build_stores(Destination(object_dir=str(tmp_path / "o"), state_dir=str(tmp_path)))
    assert isinstance(stores["object_store"].build(), LocalObjectStore)
    assert isinstance(stores["state"].build(), StateStore)


def test_state_objects_in_the_bucket():
    stores = build_stores(Destination(bucket="b-x", state_bucket="b-x", state_prefix="fdri/state"))
    assert isinstance(stores["state"].build(), S3StateStore)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            Destination(object_dir="/o", state_dir="/s", state_bucket="b-x", state_prefix="p"),
            "state_dir and state_prefix are both set; unset one",
        ),
        (
            Destination(bucket="b-x", object_dir="/o"),
            "give exactly one destination",
        ),
        (Destination(), "give exactly one destination"),
    ],
)
def test_conflicting_choices_are_one_line(where, message):
    with pytest.raises(ValueError, match=message):
        build_stores(where)


def test_the_start_rule_is_the_watermark_else_the_fallback():
    state = state_rules.advance(state_rules.empty_state(), {"ALIC1": datetime(2024, 6, 1)})
    fallback = state_rules.fallback_start(NOW, 3)
    assert fallback == datetime(2024, 6, 2, 9, 0)
    assert state_rules.export_start(state, "ALIC1", fallback) == datetime(2024, 6, 1)
    assert state_rules.export_start(state, "BALRD", fallback) == fallback
    assert state_rules.export_start(state, "BALRD", state_rules.fallback_start(NOW, None)) is None
