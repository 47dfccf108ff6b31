"""A disk that fills up part way through the state save (issue 25 item 6).

The save writes main, its checksum, the backup, its checksum. When the disk fills after main was
written, the new watermarks are on disk, so "watermark not saved … the next run re-sends them"
was false: the message must say what the files hold. The state folder is a small tmpfs in a
private mount namespace, as in
``test_export_object_store_faults.test_a_full_disk_is_named_enospc``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, sqlite_url
from iotswarm_tests.small_disk import run_on_small_disk

SAVE_AND_REPORT = """
import sys
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import LocalObjectStore
from iotswarm_pipelines.export.pipeline import ExportError, export_table
from iotswarm_pipelines.export.state import watermark
from iotswarm_pipelines.export.state_store import StateStore
state_dir, root, url = sys.argv[1:4]
state = StateStore(state_dir=state_dir)
try:
    export_table(catalogue.SOILMET_30MIN, source=CosmosSource(url=url), fallback_hours=None,
                 store=LocalObjectStore(root=root), state=state)
except ExportError as exc:
    print(exc)
print("loads", watermark(state.load("LEVEL1_SOILMET_30MIN"), "ALIC1"))
"""

NEWEST = datetime(2024, 6, 1, 1, 30)


def export_on_a_small_disk(tmp_path, size: str) -> list[str]:
    """Export four rows with the state folder on a tmpfs of ``size``; the script's lines."""
    url = sqlite_url(tmp_path)
    times = [datetime(2024, 6, 1) + timedelta(minutes=30 * i) for i in range(4)]
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    result = run_on_small_disk(state_dir, size, SAVE_AND_REPORT, str(tmp_path / "objects"), url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_a_full_disk_at_the_backups_checksum_says_both_files_hold_the_new_watermarks(tmp_path):
    """16 KiB: the lock file, main, its checksum and the backup fit; the backup's checksum not."""
    message, *_, loads = export_on_a_small_disk(tmp_path, "16k")
    state = tmp_path / "state"
    assert message.startswith(
        f"{SOILMET}: 4 objects stored; the new watermarks are in both state files "
        f"({state / SOILMET}.pickle, {state / SOILMET}.pickle.backup); only the backup's "
        f"checksum {state / SOILMET}.pickle.backup.sha256 could not be written "
        "(ENOSPC: No space left on device)"
    ), message
    assert "watermark not saved" not in message and "re-sends" not in message
    assert "the next run starts from the new watermarks" in message
    assert loads == f"loads {NEWEST}"  # what the message says is true


def test_a_full_disk_at_the_backup_says_main_holds_the_new_watermarks(tmp_path):
    """12 KiB: the lock file, main and its checksum fit; the backup not."""
    message, *_, loads = export_on_a_small_disk(tmp_path, "12k")
    state = tmp_path / "state"
    assert message.startswith(
        f"{SOILMET}: 4 objects stored; the new watermarks are in the main state file "
        f"{state / SOILMET}.pickle and its checksum; the backup {state / SOILMET}.pickle.backup "
        "could not be written (ENOSPC: No space left on device) and is left as it was"
    ), message
    assert loads == f"loads {NEWEST}"


@pytest.mark.parametrize("size", ["4k"])
def test_a_disk_full_before_main_still_says_the_watermark_was_not_saved(tmp_path, size):
    message, *_ = export_on_a_small_disk(tmp_path, size)
    assert message.startswith(f"{SOILMET}: 4 objects stored, watermark not saved (ENOSPC")
    assert "the next run re-sends them to the same keys" in message
