"""A history re-export of days the source holds no rows for says so, and which days it holds.

The README's history example (2024-06-01 .. 2024-06-30) read "0 rows" and exited 0 on the
sample data, which covers the last two days: nothing told the operator the window was empty.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pytest

from iotswarm_pipelines.export.assets import cosmos_history_export
from iotswarm_tests.export_fixtures import (
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    source,
    sqlite_url,
)

pytestmark = pytest.mark.usefixtures("fresh_engines")


def _history(tmp_path, first_day: str, last_day: str) -> dg.ExecuteInProcessResult:
    url = sqlite_url(tmp_path)
    times = [datetime(2026, 11, 30, 0, 30) + timedelta(minutes=30 * i) for i in range(96)]
    insert_rows(url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    insert_rows(url, SOILMET, make_rows(SOILMET, "BALRD", times[:10]))
    config = {"table": SOILMET, "first_day": first_day, "last_day": last_day}
    return dg.materialize(
        [cosmos_history_export],
        resources={"cosmos": source(url), "object_store": local_store(tmp_path)},
        run_config={"ops": {cosmos_history_export.op.name: {"config": config}}},
        raise_on_error=False,
    )


def test_an_empty_window_fails_naming_the_days_the_source_holds(tmp_path):
    result = _history(tmp_path, "2024-06-01", "2024-06-30")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    text = failure.step_failure_data.user_failure_data.description
    assert "holds no LEVEL1_SOILMET_30MIN rows from 2024-06-01 to 2024-06-30" in text
    assert "it holds 2026-11-30 .. 2026-12-01" in text, text
    assert not (tmp_path / "objects").exists() or not any((tmp_path / "objects").rglob("*.json"))


def test_a_window_the_source_holds_re_sends_it(tmp_path):
    result = _history(tmp_path, "2026-11-30", "2026-11-30")
    assert result.success
