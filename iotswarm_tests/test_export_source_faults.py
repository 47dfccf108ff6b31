"""The COSMOS source under the export: a PostgreSQL connection killed mid-stream, a site's
backlog arriving late, ``DATE_TIME`` stored as ISO text in SQLite; every row still sent once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.state import watermark
from iotswarm_tests.export_faults import (
    T0,
    HookedStore,
    assert_exactly_the_expected_objects,
    assert_watermarks_not_ahead,
    export,
    half_hours,
    seed,
)
from iotswarm_tests.export_fixtures import SOILMET
from iotswarm_tests.services import terminate_other_backends

pytestmark = pytest.mark.usefixtures("fresh_engines")


@pytest.mark.parametrize("retries", [3, 0], ids=["retried", "no-retries-left"])
def test_killed_database_connection_mid_export(local_objects, local_state, pg_url, retries):
    seed(pg_url, {site: half_hours(T0, 20) for site in ("ALIC1", "BALRD")})
    killed = []

    def kill_connection(n: int) -> None:
        if n == 25:  # BALRD's stream is half read
            killed.append(terminate_other_backends(pg_url))

    source = CosmosSource(url=pg_url, chunk_rows=3, retries=retries, retry_backoff_seconds=0.01)
    hooked = HookedStore(local_objects, kill_connection)
    if retries:
        summary = export(pg_url, hooked, local_state, source=source)
        assert summary.rows_read == 40 and summary.failed == 0
    else:
        with pytest.raises(SourceError, match="terminating connection"):
            export(pg_url, hooked, local_state, source=source)
        assert_watermarks_not_ahead(pg_url, local_objects, local_state)
        assert watermark(local_state.load(SOILMET), "ALIC1") == T0 + timedelta(hours=9, minutes=30)
        assert watermark(local_state.load(SOILMET), "BALRD") < T0 + timedelta(hours=9, minutes=30)
        export(pg_url, local_objects, local_state)
    assert killed and killed[0] >= 1
    assert_exactly_the_expected_objects(pg_url, local_objects)


def test_late_backlog_of_one_site_is_exported_by_the_next_run(
    cosmos_url, local_objects, local_state
):
    seed(
        cosmos_url,
        {"ALIC1": half_hours(T0, 10), "BALRD": half_hours(T0, 10), "CHIMN": half_hours(T0, 3)},
    )
    export(cosmos_url, local_objects, local_state)
    # CHIMN's logger catches up: rows older than the other sites' watermarks, newer than its own.
    backlog = half_hours(T0 + timedelta(hours=1, minutes=30), 4)
    assert backlog[-1] < watermark(local_state.load(SOILMET), "ALIC1")
    seed(cosmos_url, {"CHIMN": backlog})

    summary = export(cosmos_url, local_objects, local_state)
    assert summary.rows_read == 4
    assert summary.watermarks["CHIMN"] == backlog[-1]
    assert_exactly_the_expected_objects(cosmos_url, local_objects)


def test_iso_t_date_times_on_sqlite_are_refused_with_the_fix_then_export_once(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4)})
    engine = sa.create_engine(cosmos_url)
    rewrite = f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, ' ', 'T')"
    with engine.begin() as conn:
        conn.execute(sa.text(rewrite))  # as a tool writing isoformat() would have stored them

    with pytest.raises(SourceError) as caught:
        export(cosmos_url, local_objects, local_state)
    assert (
        f"{SOILMET} stores DATE_TIME of site ALIC1 as ISO text with a 'T' "
        "(2024-06-01T01:30:00.000000), which SQLite compares wrongly; rewrite it: "
        f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, 'T', ' ')"
    ) in str(caught.value)
    assert local_objects.list_keys() == [] and not any(
        p.exists() for p in local_state.paths(SOILMET)
    )

    with engine.begin() as conn:  # the fix the line gives
        conn.execute(sa.text(f"UPDATE {SOILMET} SET DATE_TIME = replace(DATE_TIME, 'T', ' ')"))
    engine.dispose()
    assert export(cosmos_url, local_objects, local_state).rows_read == 4
    seed(cosmos_url, {"ALIC1": [T0 + timedelta(hours=2)]})
    assert (
        export(cosmos_url, local_objects, local_state).rows_read == 1
    )  # not the watermark's day again
