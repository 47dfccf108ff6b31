"""``make sensor-stop NAME=…`` (and the other switches) take the table's own spelling.

``NAME=cosmos_new_rows_LEVEL1_SOILMET_30MIN`` gave a Python traceback; it now switches the
sensor ``cosmos_new_rows_level1_soilmet_30min``. A name nothing knows gets one line listing the
valid names, exit 2, no traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from iotswarm_pipelines.automation_names import UnknownNameError, resolve
from iotswarm_tests.test_readme_commands import checkout  # noqa: F401 (fixture)


@pytest.mark.parametrize(
    ("kind", "given", "name"),
    [
        ("sensor", "cosmos_new_rows_LEVEL1_SOILMET_30MIN", "cosmos_new_rows_level1_soilmet_30min"),
        ("sensor", "cosmos_new_rows_level1_soilmet_30min", "cosmos_new_rows_level1_soilmet_30min"),
        ("sensor", " LEVEL1_SOILMET_30MIN ", "cosmos_new_rows_level1_soilmet_30min"),
        ("sensor", "LEVEL_1_SOILMET_30MIN", "cosmos_new_rows_level1_soilmet_30min"),
        ("schedule", "cosmos_every_LEVEL1_NMDB_1HOUR", "cosmos_every_level1_nmdb_1hour"),
        ("schedule", "level1_precip_1min", "cosmos_every_level1_precip_1min"),
        ("schedule", "COSMOS_RECONCILE_YESTERDAY", "cosmos_reconcile_yesterday"),
    ],
)
def test_a_name_resolves_to_the_sensor_or_schedule(kind, given, name):
    assert resolve(kind, given) == name


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as caught:
        resolve("sensor", "cosmos_new_rows_NOPE")
    text = str(caught.value)
    assert "\n" not in text and "no sensor 'cosmos_new_rows_NOPE'" in text
    assert "cosmos_new_rows_level1_soilmet_30min" in text and "cosmos_every_" not in text


def _make(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTSWARM_", "DAGSTER_"))}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_make_sensor_stop_takes_the_tables_spelling(checkout):  # noqa: F811
    run = _make(checkout, "sensor-stop", "NAME=cosmos_new_rows_LEVEL1_SOILMET_30MIN")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "cosmos_new_rows_level1_soilmet_30min" in run.stdout


def test_make_schedule_start_of_an_unknown_name_is_one_line(checkout):  # noqa: F811
    run = _make(checkout, "schedule-start", "NAME=cosmos_every_nope")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    [line] = [line for line in run.stderr.splitlines() if "cosmos_every_nope" in line]
    assert "valid:" in line and "cosmos_every_level1_soilmet_30min" in line
