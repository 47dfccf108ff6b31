"""Watermark rules and the restricted unpickler, on bytes the existing uploader would write."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest

from iotswarm_pipelines.export.state import (
    CorruptStateError,
    advance,
    dumps_state,
    empty_state,
    loads_state,
    watermark,
)

T0 = datetime(2024, 6, 1, 0, 30)


def old_tool_state() -> dict:
    return {
        "last_run": T0 + timedelta(hours=1),
        "sites": {
            "ALIC1": {"site_id": "ALIC1", "last_data": T0},
            "BALRD": {"site_id": "BALRD", "last_data": T0 + timedelta(hours=1)},
        },
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_existing_tool_files_load_unchanged(protocol):
    assert loads_state(pickle.dumps(old_tool_state(), protocol=protocol)) == old_tool_state()


def test_our_files_load_in_the_existing_tool():
    assert pickle.loads(dumps_state(old_tool_state())) == old_tool_state()


def test_tz_aware_values_become_naive_utc():
    plus_one = timezone(timedelta(hours=1))
    state = {
        "last_run": datetime(2024, 6, 1, 2, 0, tzinfo=plus_one),
        "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": datetime(2024, 6, 1, tzinfo=UTC)}},
    }
    loaded = loads_state(pickle.dumps(state))
    assert loaded["last_run"] == datetime(2024, 6, 1, 1, 0)
    assert loaded["sites"]["ALIC1"]["last_data"] == datetime(2024, 6, 1)
    assert loaded["last_run"].tzinfo is None


class _RunsCommand:
    def __init__(self, func, command):
        self.func, self.command = func, command

    def __reduce__(self):
        return self.func, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
def test_pickle_calling_os_system_is_corrupt_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = {"last_run": _RunsCommand(os.system, f"touch {marker}"), "sites": {}}
    data = pickle.dumps(evil, protocol=protocol)
    with pytest.raises(CorruptStateError, match="system is not allowed"):
        loads_state(data)
    assert not marker.exists()
    pickle.loads(data)  # the same bytes really do run the command when unpickled freely
    assert marker.exists()


def test_pickle_calling_eval_is_corrupt():
    data = pickle.dumps(_RunsCommand(eval, "__import__('os').getpid()"))
    with pytest.raises(CorruptStateError, match=r"builtins\.eval"):
        loads_state(data)


def test_protocol_2_bytes_helper_only_decodes_latin1():
    good = pickle.dumps(old_tool_state(), protocol=2)
    assert b"latin1" in good
    bad = good.replace(b"latin1", b"rot_13")
    with pytest.raises(CorruptStateError, match="not allowed"):
        loads_state(bad)


GOOD = pickle.dumps(old_tool_state())
SITE = {"site_id": "ALIC1", "last_data": T0}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty-EOFError"),
        pytest.param(GOOD[: len(GOOD) // 2], id="truncated"),
        pytest.param(b"not a pickle at all", id="garbage-UnpicklingError"),
        pytest.param(b"\x80\x04K\x01\x94.extra" * 3, id="wrong-type-int"),
        pytest.param(pickle.dumps([T0]), id="list"),
        pytest.param(pickle.dumps({"sites": {}}), id="missing-last_run"),
        pytest.param(pickle.dumps({"last_run": None, "sites": {}, "x": 1}), id="extra-key"),
        pytest.param(pickle.dumps({"last_run": "2024-06-01", "sites": {}}), id="last_run-str"),
        pytest.param(pickle.dumps({"last_run": None, "sites": []}), id="sites-list"),
        pytest.param(
            pickle.dumps({"last_run": None, "sites": {"BALRD": SITE}}), id="site-id-mismatch"
        ),
        pytest.param(
            pickle.dumps({"last_run": None, "sites": {"ALIC1": {**SITE, "last_data": 5}}}),
            id="last_data-int",
        ),
        pytest.param(
            pickle.dumps({"last_run": None, "sites": {"ALIC1": {"site_id": "ALIC1"}}}),
            id="site-missing-last_data",
        ),
        pytest.param(pickle.dumps({"last_run": None, "sites": {1: SITE}}), id="site-key-int"),
        pytest.param(pickle.dumps({"last_run": {1, 2}, "sites": {}}), id="set"),
    ],
)
def test_corrupt_states(data):
    with pytest.raises(CorruptStateError):
        loads_state(data)


def test_dumps_refuses_a_malformed_state():
    with pytest.raises(CorruptStateError):
        dumps_state({"sites": {}})


def test_advance_adds_new_sites_and_moves_later_ones():
    state = advance(old_tool_state(), {"ALIC1": T0 + timedelta(hours=3), "CHIMN": T0})
    assert watermark(state, "ALIC1") == T0 + timedelta(hours=3)
    assert watermark(state, "CHIMN") == T0
    assert watermark(state, "BALRD") == T0 + timedelta(hours=1)
    assert state["sites"]["CHIMN"] == {"site_id": "CHIMN", "last_data": T0}


@pytest.mark.parametrize("back", [timedelta(0), timedelta(minutes=-30)])
def test_watermark_never_moves_back(back):
    state = advance(old_tool_state(), {"BALRD": T0 + timedelta(hours=1) + back})
    assert watermark(state, "BALRD") == T0 + timedelta(hours=1)


def test_last_run_follows_the_newest_data_and_never_moves_back():
    assert advance(empty_state(), {"ALIC1": T0})["last_run"] == T0
    moved = advance(old_tool_state(), {"ALIC1": T0 + timedelta(hours=5)})
    assert moved["last_run"] == T0 + timedelta(hours=5)
    stale = {**old_tool_state(), "last_run": T0 + timedelta(days=1)}
    assert advance(stale, {"ALIC1": T0 + timedelta(hours=2)})["last_run"] == T0 + timedelta(days=1)


def test_advance_returns_a_new_state_and_leaves_the_input_alone():
    before = old_tool_state()
    advance(before, {"ALIC1": T0 + timedelta(hours=2), "NEW01": T0})
    assert before == old_tool_state()


def test_watermark_of_an_unknown_site_is_none():
    assert watermark(empty_state(), "ALIC1") is None


@pytest.mark.parametrize("bad", [datetime(2024, 6, 1, tzinfo=UTC), "2024-06-01", None])
def test_advance_refuses_values_that_are_not_naive_datetimes(bad):
    with pytest.raises(ValueError, match="naive UTC datetime"):
        advance(empty_state(), {"ALIC1": bad})
