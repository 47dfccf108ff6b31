"""``live-cosmos reconcile``: exit codes, the heal, and bad input as one line."""

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import cli
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_tests.export_fixtures import (
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    source,
    state_store,
)

ROOT = Path(__file__).resolve().parents[1]
LIVE_COSMOS = Path(sys.executable).with_name("live-cosmos")


@pytest.fixture
def config(tmp_path, cosmos_url) -> Path:
    """Two days of ALIC1 SOILMET exported to a folder, and the config file that points at it."""
    times = [datetime(2024, 6, 1, 0, 30) + timedelta(minutes=30 * i) for i in range(96)]
    for table in catalogue.TABLE_NAMES:  # the other tables exist, empty
        insert_rows(cosmos_url, table, [])
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_store(tmp_path),
        state=state_store(tmp_path),
        fallback_hours=None,
    )
    path = tmp_path / "livecosmos.cfg"
    path.write_text(
        f"url='{cosmos_url}'\n"
        f"object_dir='{tmp_path / 'objects'}'\nstate_dir='{tmp_path / 'state'}'\n"
        "bucket_prefix='fdri/cosmos_swarm'\n"
    )
    return path


def reconcile(config: Path, *args: str) -> int:
    try:
        return cli.run(["reconcile", str(config), *args])
    except SystemExit as exc:  # argparse's own errors exit from inside
        return exc.code


def test_a_complete_store_exits_0(config, capsys):
    code = reconcile(config, SOILMET, "--since", "2024-06-01", "--until", "2024-06-02")
    assert code == 0
    assert capsys.readouterr().out.startswith("complete: 2 day(s) x 1 table(s)")


def test_missing_rows_exit_1_until_healed(local_objects, config, capsys):
    gone = local_objects.list_keys()[5]
    local_objects._path(gone).unlink()
    args = ("all", "--since", "2024-06-01", "--until", "2024-06-02")

    assert reconcile(config, *args) == 1
    out = capsys.readouterr().out
    assert "LEVEL1_SOILMET_30MIN 2024-06-01: 48 rows, 47 found, 1 missing" in out
    assert "ALIC1  missing: 2024-06-01T03:00:00" in out
    assert "run again with --heal" in out

    assert reconcile(config, *args, "--heal") == 0
    assert gone in local_objects.list_keys()
    assert reconcile(config, *args) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SOILMET, "--since", "June"), "--since 'June' is not a date"),
        ((SOILMET, "--since", "2024-06-02", "--until", "2024-06-01"), "is before --since"),
        (("LEVEL9", "--since", "2024-06-01"), "LEVEL9"),
        ((SOILMET,), "the following arguments are required: --since"),
    ],
)
def test_bad_input_exits_2_with_one_line(config, capsys, args, message):
    assert reconcile(config, *args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_installed_command_reconciles(config):
    done = subprocess.run(
        [
            str(LIVE_COSMOS),
            "reconcile",
            str(config),
            SOILMET,
            "--since",
            "2024-06-01",
            "--until",
            "2024-06-02",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout


def test_the_config_file_s_payload_format_and_batch_size_predict_and_heal_the_export_s_keys(
    tmp_path, local_objects, cosmos_url, capsys
):
    """An export in the old tool's text, 48 rows a payload: the heal restores its exact key."""
    times = [datetime(2024, 6, 1, 0, 30) + timedelta(minutes=30 * i) for i in range(96)]
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    old = payloads.PayloadFormat(prog_name="CPU:iotswarm-1.6.10.CR1X", strict_json=True)
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        state=state_store(tmp_path),
        fallback_hours=None,
        batch_size=48,
        payload_format=old,
    )
    path = tmp_path / "livecosmos.cfg"
    path.write_text(
        f"url='{cosmos_url}'\n"
        f"object_dir='{tmp_path / 'objects'}'\nstate_dir='{tmp_path / 'state'}'\n"
        "bucket_prefix='fdri/cosmos_swarm'\nbatch_size=48\n"
        "prog_name='CPU:iotswarm-1.6.10.CR1X'\nstrict_json=true\n"
    )
    exported = sorted(local_objects.list_keys())
    gone = exported[0]
    local_objects._path(gone).unlink()
    args = (SOILMET, "--since", "2024-06-01", "--until", "2024-06-02")

    assert reconcile(path, *args) == 1
    assert "48 missing" in capsys.readouterr().out
    assert reconcile(path, *args, "--heal") == 0
    assert sorted(local_objects.list_keys()) == exported  # the export's key, and no other
    assert reconcile(path, *args) == 0
