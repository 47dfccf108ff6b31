"""``fallback_hours`` of any size: the old tool's users set 1000000 to mean "everything".

Every value from 0 up (infinity too) is accepted; the start is clamped to the oldest time a
source row can hold, and a value beyond 50 years gets a warning saying what it means: a site
the state has never seen is sent from its first row. Negative and NaN stay refused.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.config_file import ConfigFileError, parse_config
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_tests.export_faults import T0, export, half_hours, seed
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, local_store, make_rows, state_store

NOW = datetime(2026, 12, 1, 12, 0)
OLD = datetime(2013, 5, 1, 0, 30)  # a site's first row, years before any fallback window
LIVE_COSMOS = Path(sys.executable).with_name("live-cosmos")


pytestmark = pytest.mark.usefixtures("fresh_engines")


@pytest.mark.parametrize("hours", [1e6, 1e9, float("inf")])
def test_a_huge_fallback_sends_every_row_with_a_warning(hours, tmp_path, cosmos_url, caplog):
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", [OLD, NOW - timedelta(hours=1)]))
    with caplog.at_level(logging.WARNING):
        summary = export_table(
            catalogue.SOILMET_30MIN,
            source=CosmosSource(url=cosmos_url),
            store=local_store(tmp_path),
            state=state_store(tmp_path),
            fallback_hours=hours,
            now=NOW,
        )
    assert summary.rows_read == 2
    [warning] = [r.getMessage() for r in caplog.records if "fallback_hours" in r.getMessage()]
    assert warning.startswith("fallback_hours ") and "from its first row" in warning


def test_the_start_is_clamped_to_the_oldest_time_a_row_can_hold():
    assert state_rules.fallback_start(NOW, float("inf")) == state_rules.OLDEST_ROW_TIME
    assert state_rules.fallback_start(NOW, 1e12) == state_rules.OLDEST_ROW_TIME
    assert state_rules.fallback_start(NOW, 1e6) == NOW - timedelta(hours=1e6)


def test_the_config_file_takes_the_old_tools_million(tmp_path):
    path = tmp_path / "livecosmos.cfg"
    path.write_text("url='sqlite:///x.sqlite'\nobject_dir='o'\nfallback_hours='1000000'\n")
    assert parse_config(path).options["fallback_hours"] == 1e6
    path.write_text("url='sqlite:///x.sqlite'\nobject_dir='o'\nfallback_hours='-1'\n")
    with pytest.raises(ConfigFileError, match="0 or more"):
        parse_config(path)


def test_live_cosmos_prints_what_a_million_hours_means(tmp_path, cosmos_url):
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", [OLD]))
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{cosmos_url}'\n"
        f"object_dir='{tmp_path / 'objects'}'\nstate_dir='{tmp_path / 'state'}'\n"
        "fallback_hours='1000000'\n"
    )
    run = subprocess.run(
        [str(LIVE_COSMOS), str(config), SOILMET],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "1 rows" in run.stdout
    [line] = [line for line in run.stderr.splitlines() if "fallback_hours" in line]
    assert line.startswith("live-cosmos: warning: fallback_hours 1,000,000") and "first row" in line


@pytest.mark.parametrize("hours", [float("nan"), -1])  # any size from 0 up is accepted
def test_absurd_fallback_hours_are_refused_before_anything_runs(
    tmp_path, cosmos_url, local_objects, local_state, hours
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 2)})
    with pytest.raises(ValueError, match="fallback_hours must be a number of hours, 0 or more"):
        export(cosmos_url, local_objects, local_state, fallback_hours=hours)
    assert not (tmp_path / "state").exists() and local_objects.list_keys() == []
