"""Rows the export cannot send stop only their own site, loudly.

A row from the future, a value no payload carries or an unreadable ``DATE_TIME`` holds its
site's watermark before it while the other sites export; the line names site and time, never
the value; ``skip_rows`` leaves a row out on record.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.pipeline import ExportError
from iotswarm_pipelines.export.state import watermark
from iotswarm_tests.export_faults import T0, export, half_hours, seed, stored_rows
from iotswarm_tests.export_fixtures import SOILMET

pytestmark = pytest.mark.usefixtures("fresh_engines")


def test_a_future_dated_row_holds_its_site_loudly_and_loses_no_later_row(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    seed(cosmos_url, {"ALIC1": [datetime(2030, 1, 1)]})  # a logger whose clock jumped

    with pytest.raises(ExportError) as caught:
        export(cosmos_url, local_objects, local_state)
    assert "1 site(s) stopped before rows they cannot send (the other sites were exported)" in (
        str(caught.value)
    )
    assert "ALIC1 has rows dated up to 2030-01-01 00:00:00, later than now plus the tolerance" in (
        str(caught.value)
    )
    marks = local_state.load(SOILMET)
    assert watermark(marks, "ALIC1") == watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)
    assert len(local_objects.list_keys()) == 8

    # The row is corrected; the real rows that follow it are exported, each once.
    engine = sa.create_engine(cosmos_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"DELETE FROM {SOILMET} WHERE DATE_TIME >= '2030-01-01'"),
        )
    engine.dispose()
    seed(cosmos_url, {"ALIC1": half_hours(T0 + timedelta(hours=2), 3)})
    summary = export(cosmos_url, local_objects, local_state)
    assert summary.rows_read == 3
    assert summary.watermarks["ALIC1"] == T0 + timedelta(hours=3)
    assert set(stored_rows(local_objects).values()) == {1}


def test_freshness_flags_a_watermark_ahead_of_the_sources_newest_row(cosmos_url, local_state):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    # The state an earlier release left: a 2030 row moved the watermark, then was corrected.
    local_state.advance(
        SOILMET, {"ALIC1": datetime(2030, 1, 1), "BALRD": T0 + timedelta(hours=1.5)}
    )
    newest = CosmosSource(url=cosmos_url).newest_times(SOILMET)

    outcome = health.freshness(catalogue.SOILMET_30MIN, newest, local_state.load(SOILMET), T0, 3.0)
    assert not outcome.passed
    assert outcome.description.startswith(
        f"{SOILMET}: the watermark of 1 site(s) is ahead of the source's newest row "
        "(ALIC1: 2030-01-01 00:00:00 > 2024-06-01 01:30:00)"
    )
    assert outcome.metadata["sites_ahead"] == 1


def _poison(url: str, site: str, when: datetime, column: str, value) -> None:
    table = schema.sa_table(SOILMET)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c["SITE_ID"] == site, table.c["DATE_TIME"] == when)
            .values({column: sa.literal(value, sa.LargeBinary())})  # a BLOB, unconverted
        )
    engine.dispose()


VALUE_COLUMN = next(  # a float column: SQLite hands a BLOB stored there over as bytes
    c.name for c in catalogue.get_table(SOILMET).columns if c.type is catalogue.ColumnType.FLOAT
)


def test_a_value_no_payload_carries_stops_its_site_only_until_skipped_on_record(
    cosmos_url, local_objects, local_state, caplog
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    bad_time = T0 + timedelta(hours=1)
    _poison(cosmos_url, "ALIC1", bad_time, VALUE_COLUMN, b"\x00secret-bytes")

    for _ in range(2):  # every rerun: the same one line, the other site unharmed
        with pytest.raises(ExportError) as caught:
            export(cosmos_url, local_objects, local_state)
        message = str(caught.value)
        assert (
            f"ALIC1 at 2024-06-01 01:00:00: column {VALUE_COLUMN} holds a bytes value, which no "
            "payload carries; correct the row, or skip it with skip_rows: "
            "['ALIC1@2024-06-01T01:00:00']"
        ) in message
        assert "secret" not in message
        marks = local_state.load(SOILMET)
        assert watermark(marks, "ALIC1") == T0 + timedelta(minutes=30)
        assert watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)

    with caplog.at_level(logging.WARNING):
        summary = export(
            cosmos_url, local_objects, local_state, skip_rows=["ALIC1@2024-06-01T01:00"]
        )
    assert summary.skipped_rows == ["ALIC1@2024-06-01T01:00:00"]
    assert "skipped ALIC1@2024-06-01T01:00:00 as skip_rows asks" in caplog.text
    assert summary.watermarks["ALIC1"] == T0 + timedelta(hours=1.5)
    assert (("ALIC1", bad_time) not in stored_rows(local_objects)) and len(
        local_objects.list_keys()
    ) == 7


def test_an_unreadable_date_time_stops_its_site_only_named_without_its_value(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})
    engine = sa.create_engine(cosmos_url)
    with engine.begin() as conn:  # sorts between 00:30 and 01:00, cannot be a datetime
        conn.execute(
            sa.text(
                f"UPDATE {SOILMET} SET DATE_TIME = '2024-06-01 00:45:99' WHERE SITE_ID = "
                "'ALIC1' AND DATE_TIME > '2024-06-01 00:31'  AND DATE_TIME < '2024-06-01 01:01'"
            )
        )
    engine.dispose()

    with pytest.raises(ExportError) as caught:
        export(cosmos_url, local_objects, local_state)
    message = str(caught.value)
    assert (  # the bad row fails its whole fetch: the site stops where it started
        "ALIC1 has a row that the database cannot hand over (ValueError, e.g. an unparseable "
        "DATE_TIME); correct it in the source"
    ) in message
    assert "00:45:99" not in message
    marks = local_state.load(SOILMET)
    assert watermark(marks, "ALIC1") is None
    assert watermark(marks, "BALRD") == T0 + timedelta(hours=1.5)
    assert {site for site, _ in stored_rows(local_objects)} == {"BALRD"}


def test_skipped_rows_are_recorded_in_the_runs_metadata(cosmos_url, local_objects, local_state):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 3)})
    _poison(cosmos_url, "ALIC1", T0 + timedelta(minutes=30), VALUE_COLUMN, b"\x01")
    result = dg.materialize(
        [cosmos_live_export],
        partition_key=SOILMET,
        resources={
            "cosmos": CosmosSource(url=cosmos_url),
            "object_store": local_objects,
            "state": local_state,
        },
        run_config={
            "ops": {
                cosmos_live_export.op.name: {
                    "config": {"fallback_hours": 438000, "skip_rows": ["ALIC1@2024-06-01T00:30"]}
                }
            }
        },
    )
    [event] = result.asset_materializations_for_node(cosmos_live_export.op.name)
    assert event.metadata["skipped_rows"].value == ["ALIC1@2024-06-01T00:30:00"]
    assert event.metadata["rows_read"].value == 2
