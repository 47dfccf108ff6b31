"""Damaged or untrustworthy state files, and a state that cannot be saved.

A damaged main file (truncated, empty, a flipped bit, a pickle calling ``os.system``) makes
the export use the backup; no trustworthy copy fails it, storing nothing and touching neither
file; the checksum sidecar catches every single-bit flip while the older tool still reads our
files; a save that fails after storing says so and the rerun re-sends to the same keys.
"""

from __future__ import annotations

import os
import pickle
from datetime import timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.export.pipeline import StateNotSavedError
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.store_errors import StateRecoveryError
from iotswarm_tests.export_faults import (
    T0,
    HookedStore,
    assert_exactly_the_expected_objects,
    export,
    half_hours,
    seed,
    stored_rows,
)
from iotswarm_tests.export_fixtures import SOILMET, local_store, sqlite_url, state_store

pytestmark = pytest.mark.usefixtures("fresh_engines")


def flip_bit_in_structure(data: bytes) -> bytes:
    """One bit of the ``sites`` key flipped (``sites`` -> ``sitgs``): a broken structure.

    A flip inside a datetime's bytes can make another valid datetime; the file format is the old
    uploader's plain pickle, so it has no checksum that could tell (see RELIABILITY.md).
    """
    at = data.index(b"sites") + 3
    return data[:at] + bytes([data[at] ^ 0x02]) + data[at + 1 :]


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def corruptions(good: bytes, marker: Path) -> dict[str, bytes]:
    return {
        "truncated": good[: len(good) // 2],
        "zero-length": b"",
        "bit-flipped": flip_bit_in_structure(good),
        "wrong-structure": pickle.dumps({"last_run": None, "sites": ["ALIC1"]}),
        "os-system-pickle": pickle.dumps({"last_run": _System(marker), "sites": {}}),
    }


@pytest.mark.parametrize(
    "kind", ["truncated", "zero-length", "bit-flipped", "wrong-structure", "os-system-pickle"]
)
def test_corrupt_main_state_export_uses_the_backup(
    tmp_path, cosmos_url, local_objects, local_state, kind
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    export(cosmos_url, local_objects, local_state)
    main, backup = local_state.paths(SOILMET)
    marker = tmp_path / "os-system-ran"
    main.write_bytes(corruptions(main.read_bytes(), marker)[kind])
    seed(cosmos_url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})

    summary = export(cosmos_url, local_objects, local_state)
    assert summary.rows_read == 3  # from the backup's watermark, not from scratch
    assert not marker.exists()
    assert pickle.loads(main.read_bytes()) == pickle.loads(backup.read_bytes())
    assert watermark(local_state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=3)
    assert_exactly_the_expected_objects(cosmos_url, local_objects)


@pytest.mark.parametrize(
    ("main_kind", "backup_kind"),
    [
        ("truncated", "zero-length"),
        ("bit-flipped", "wrong-structure"),
        ("os-system-pickle", "truncated"),
        (None, "zero-length"),
        (None, "os-system-pickle"),
    ],
    ids=["both-truncated", "both-bad-structure", "both-bad-evil", "no-main-empty", "no-main-evil"],
)
def test_untrustworthy_state_fails_the_export_and_stores_nothing(tmp_path, main_kind, backup_kind):
    url, store, state = sqlite_url(tmp_path), local_store(tmp_path / "first"), state_store(tmp_path)
    seed(url, {"ALIC1": half_hours(T0, 4)})
    export(url, store, state)
    main, backup = state.paths(SOILMET)
    marker = tmp_path / "os-system-ran"
    bad = corruptions(main.read_bytes(), marker)
    main.unlink()
    if main_kind:
        main.write_bytes(bad[main_kind])
    backup.write_bytes(bad[backup_kind])
    seed(url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})
    files = {p: p.read_bytes() for p in (main, backup) if p.exists()}

    after = local_store(tmp_path / "after")
    with pytest.raises(StateRecoveryError, match="cannot load the export state") as caught:
        export(url, after, state)
    assert str(backup) in str(caught.value) and "restore" in str(caught.value)
    assert after.list_keys() == []
    assert {p: p.read_bytes() for p in (main, backup) if p.exists()} == files  # no silent reset
    assert not marker.exists()


SITES3 = ("ALIC1", "BALRD", "CHIMN")


def _rot(path, data: bytes) -> None:
    """Damage where the file lies: new bytes, the same modification time (no tool wrote it)."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_every_single_bit_flip_of_the_main_state_is_detected_and_the_backup_used(local_state):
    good = {site: T0 + timedelta(hours=i, minutes=7 * i) for i, site in enumerate(SITES3)}
    local_state.advance(SOILMET, good)
    main, backup = local_state.paths(SOILMET)
    expected, original = local_state.load(SOILMET), main.read_bytes()
    assert main.with_name(main.name + ".sha256").exists()

    def flipped(bit: int) -> bytes:
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)

    different = 0
    for bit in range(len(original) * 8):
        _rot(main, flipped(bit))
        content = local_state.copies(SOILMET)[0].content  # main as read, nothing rewritten
        different += isinstance(content, dict) and content != expected
    assert different == 0  # before the checksum: 405 of 1672 flips loaded as another state

    _rot(main, flipped(len(original) * 4))
    assert local_state.load(SOILMET) == expected  # from the backup, which then rewrites main
    assert main.read_bytes() == original == backup.read_bytes()


def test_both_tools_still_read_each_others_state_files(tmp_path, local_state):
    local_state.advance(SOILMET, {"ALIC1": T0})
    main, backup = local_state.paths(SOILMET)
    # The older tool reads ours: a plain pickle of the same dict, the sidecar beside it ignored.
    assert (
        pickle.loads(main.read_bytes())
        == pickle.loads(backup.read_bytes())
        == ({"last_run": T0, "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": T0}}})
    )
    # The older tool rewrites ours later (its file is newer than our sidecar): trusted.
    sidecar = main.with_name(main.name + ".sha256")
    stamp = sidecar.stat().st_mtime_ns
    later = {
        "last_run": T0 + timedelta(hours=1),
        "sites": {"ALIC1": {"site_id": "ALIC1", "last_data": T0 + timedelta(hours=1)}},
    }
    main.write_bytes(pickle.dumps(later))
    os.utime(main, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))
    assert watermark(local_state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=1)
    # A state written only by the older tool (no sidecar at all) loads as before.
    fresh = state_store(tmp_path / "old-tool")
    old_main, _ = fresh.paths(SOILMET)
    old_main.parent.mkdir(parents=True)
    old_main.write_bytes(pickle.dumps(later, protocol=2))
    assert watermark(fresh.load(SOILMET), "ALIC1") == T0 + timedelta(hours=1)


def test_state_that_cannot_be_saved_after_storing_says_so(cosmos_url, local_objects, local_state):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    main, _ = local_state.paths(SOILMET)

    def block_the_state_file(n: int) -> None:
        if n == 1:  # a folder where the main state file goes: its save must fail
            (main / "in-the-way").mkdir(parents=True)

    with pytest.raises(StateNotSavedError) as caught:
        export(cosmos_url, HookedStore(local_objects, block_the_state_file), local_state)
    message = str(caught.value)
    assert message.startswith(f"{SOILMET}: 4 objects stored, watermark not saved (")
    assert "the next run re-sends them to the same keys" in message
    keys = local_objects.list_keys()
    assert len(keys) == 4

    (main / "in-the-way").rmdir()
    main.rmdir()
    assert export(cosmos_url, local_objects, local_state).rows_read == 4
    assert local_objects.list_keys() == keys  # re-sent onto the same keys
    assert set(stored_rows(local_objects).values()) == {1}
