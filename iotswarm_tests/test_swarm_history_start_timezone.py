"""``--history-start`` with a UTC offset is the same instant under any ``TZ``: the same rows
are sent from a CSV export and from a database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import sessions
from iotswarm_tests.swarm_runs import REFERENCE_CSV

SOILMET = "LEVEL1_SOILMET_30MIN"
T0 = datetime(2024, 6, 1)


@pytest.fixture(scope="module")
def half_hourly_sources(tmp_path_factory) -> dict[str, str]:
    """ALIC1 rows every 30 minutes from 2024-06-01 00:00 UTC: a CSV export and a database."""
    folder = tmp_path_factory.mktemp("history-start")
    header, row = REFERENCE_CSV.read_text().splitlines()[:2]
    values = row.split(",")
    lines = [header]
    for k in range(12):
        values[1] = (T0 + timedelta(minutes=30 * k)).isoformat()
        lines.append(",".join(values))
    csv = folder / "alic1.csv"
    csv.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{folder / 'cosmos.sqlite'}"
    generate(url, start=T0, end=T0 + timedelta(hours=6), sites=["ALIC1"], tables=[SOILMET])
    return {"csv": str(csv), "database": url}


@pytest.mark.parametrize("source", ["csv", "database"])
def test_history_start_with_an_offset_sends_the_same_rows_under_any_tz(
    half_hourly_sources, tmp_path, source
):
    """03:00+01:00 is 02:00 UTC: the first row after it is 02:30 UTC whatever ``TZ`` says."""
    first_rows = {}
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        name = f"iotswarm-tz-{uuid.uuid4().hex[:8]}"
        result = subprocess.run(
            [
                sys.executable, "-m", "iotswarm_pipelines.swarm.cli",
                "--source", half_hourly_sources[source], "--sites", "ALIC1", "--mode", "replay",
                "--history-start", "2024-06-01T03:00+01:00", "--max-cycles", "2", "--speed",
                "1e9", "--dry", "--swarm-name", name, "--sessions-dir", str(tmp_path),
            ],
            capture_output=True, text=True, timeout=120, env={**os.environ, "TZ": tz},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        session = sessions.load_session(name, tmp_path)
        first_rows[tz] = session.positions["ALIC1"].last_time
    # Two messages sent: 02:30 and 03:00 UTC, the newest being the saved position.
    assert set(first_rows.values()) == {datetime(2024, 6, 1, 3, 0)}, first_rows
