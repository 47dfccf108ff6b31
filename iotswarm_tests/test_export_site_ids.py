"""Site IDs as configured and as stored.

Configured sites are trimmed, de-duplicated and matched case-insensitively once, then queried
exactly as stored: each row read once and the stored ID's watermark moves. A station the
catalogue does not know yet is exported with a warning; a site nothing knows is one line.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import pytest

from iotswarm_pipelines.export.sites import UnknownSiteError
from iotswarm_tests.export_faults import T0, export, half_hours, seed, stored_rows
from iotswarm_tests.export_fixtures import SOILMET

pytestmark = pytest.mark.usefixtures("fresh_engines")


@pytest.mark.parametrize("configured", [["alic1"], [" ALIC1"], ["ALIC1", "ALIC1", "alic1"]])
def test_configured_sites_match_as_stored_once_each(
    cosmos_url, local_objects, local_state, configured
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 4), "BALRD": half_hours(T0, 4)})

    summary = export(cosmos_url, local_objects, local_state, sites=configured)
    assert summary.rows_read == 4 and summary.objects_stored == 4 and summary.sites == 1
    assert set(stored_rows(local_objects).values()) == {1}
    assert {site for site, _ in stored_rows(local_objects)} == {"ALIC1"}
    assert (
        export(cosmos_url, local_objects, local_state, sites=configured).rows_read == 0
    )  # the watermark moved


def test_lower_case_site_ids_in_the_source_are_read_and_their_watermark_moves(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"alic1": half_hours(T0, 3)})

    summary = export(cosmos_url, local_objects, local_state, sites=["ALIC1"])
    assert summary.rows_read == 3
    assert summary.watermarks == {"alic1": T0 + timedelta(hours=1)}
    assert (
        export(cosmos_url, local_objects, local_state).rows_read == 0
    )  # all sites: the same stored ID


def test_a_site_the_catalogue_does_not_know_yet_is_exported_with_a_warning(
    cosmos_url, local_objects, local_state, caplog
):
    seed(cosmos_url, {"NEWS1": half_hours(T0, 2), "ALIC1": half_hours(T0, 2)})

    with caplog.at_level(logging.WARNING):
        summary = export(cosmos_url, local_objects, local_state)
    assert summary.rows_read == 4 and set(summary.watermarks) == {"ALIC1", "NEWS1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{SOILMET}: site NEWS1 is in the source but not in the catalogue; exported anyway "
        "(the source is the truth)"
    ]


def test_a_configured_site_that_matches_nothing_is_one_clear_line(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 2)})

    with pytest.raises(UnknownSiteError) as caught:
        export(cosmos_url, local_objects, local_state, sites=["NOPE1"])
    assert str(caught.value) == (
        f"unknown COSMOS site 'NOPE1': neither {SOILMET} (in any case) nor the catalogue holds "
        "it; sites with rows there: ALIC1"
    )
    assert local_objects.list_keys() == [] and not any(
        p.exists() for p in local_state.paths(SOILMET)
    )


def test_a_catalogue_site_without_rows_in_the_table_is_a_warning_not_a_failure(
    cosmos_url, local_objects, local_state, caplog
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 2)})

    with caplog.at_level(logging.WARNING):
        summary = export(cosmos_url, local_objects, local_state, sites=["alic1", "balrd"])
    assert summary.rows_read == 2
    assert f"{SOILMET}: site balrd has no rows in this table; nothing to send" in caplog.text
    assert Counter(site for site, _ in stored_rows(local_objects)) == {"ALIC1": 2}
