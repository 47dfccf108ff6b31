"""State files restored with ``cp -p`` from an older copy (issue 25 item 5).

``cp -p`` keeps the copy's old modification time, so a restored file is older than the checksum
sidecar the last save wrote, and differs from it: until now that read as damage. A pair restored
together (main and backup agree with each other) is an older state, not a damaged one: it loads,
with a warning naming the watermarks it rolls back to. A main file restored alone is replaced
from the backup, and the warning says which copy was used and why.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.store_errors import StateRecoveryError
from iotswarm_tests.export_fixtures import SOILMET

OLD = datetime(2024, 6, 1, 1, 0)
NEW = OLD + timedelta(days=2)


@pytest.fixture
def saved(tmp_path, local_state):
    """A state saved at OLD, copied aside with ``cp -p``, then advanced to NEW."""
    local_state.advance(SOILMET, {"ALIC1": OLD, "BALRD": OLD - timedelta(hours=1)})
    main, backup = local_state.paths(SOILMET)
    aside = tmp_path / "aside"
    aside.mkdir()
    subprocess.run(["cp", "-p", str(main), str(backup), str(aside)], check=True)
    local_state.advance(SOILMET, {"ALIC1": NEW, "BALRD": NEW})
    return local_state, aside


def restore(aside, *paths) -> None:
    for path in paths:
        subprocess.run(["cp", "-p", str(aside / path.name), str(path)], check=True)


def test_a_pair_restored_with_cp_p_loads_and_warns_of_the_rollback(saved, caplog):
    state, aside = saved
    main, backup = state.paths(SOILMET)
    restore(aside, main, backup)

    with caplog.at_level(logging.WARNING):
        loaded = state.load(SOILMET)
    assert watermark(loaded, "ALIC1") == OLD  # older, not damaged
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{main} and {backup}" in warning
    assert "restored together from an older copy" in warning
    assert "rolls the watermarks back to ALIC1 2024-06-01 01:00:00, BALRD 2024-06-01 00:00:00" in (
        warning
    )
    # The files are still plain pickles the older tool reads, and are left as restored.
    assert pickle.loads(main.read_bytes()) == pickle.loads(backup.read_bytes()) == loaded


def test_main_restored_alone_says_the_backup_was_used_and_why(saved, caplog):
    state, aside = saved
    main, backup = state.paths(SOILMET)
    restore(aside, main)

    with caplog.at_level(logging.WARNING):
        loaded = state.load(SOILMET)
    assert watermark(loaded, "ALIC1") == NEW
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"export state: using the backup {backup} (watermarks ALIC1 2024-")
    assert f"because the main copy {main} does not match the checksum of the last save" in warning
    assert "restored alone from an older copy" in warning
    assert "to roll back, restore both files" in warning
    assert watermark(state.load(SOILMET), "ALIC1") == NEW  # main was rewritten from the backup
    assert main.read_bytes() == backup.read_bytes()


def test_a_pair_that_disagrees_is_still_refused(saved):
    """Two copies that differ from their checksums and from each other: no rule can choose."""
    state, aside = saved
    main, backup = state.paths(SOILMET)
    restore(aside, main, backup)
    other = pickle.loads(backup.read_bytes())
    other["sites"]["ALIC1"]["last_data"] = OLD - timedelta(days=1)
    stamp = backup.stat().st_mtime_ns
    backup.write_bytes(pickle.dumps(other))
    os.utime(backup, ns=(stamp, stamp))
    with pytest.raises(StateRecoveryError):
        state.load(SOILMET)
