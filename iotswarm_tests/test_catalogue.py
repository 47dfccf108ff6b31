from datetime import timedelta

import pytest

from iotswarm_pipelines.cosmos import catalogue


def test_five_tables_with_site_and_time_first():
    assert len(catalogue.TABLES) == 5
    for table in catalogue.TABLES.values():
        assert table.column_names[:2] == ("SITE_ID", "DATE_TIME")
        assert len(set(table.column_names)) == len(table.column_names)


def test_soilmet_has_the_real_header_and_integer_counters():
    table = catalogue.SOILMET_30MIN
    assert table.cadence == timedelta(minutes=30)
    assert table.rows_per_day == 48
    assert {"RECORD", "SCANS", "CTS_MOD"} <= table.integer_columns
    assert "TA" not in table.integer_columns
    assert table.column_names[-2:] == ("WM_NAN_COUNT", "RH_INTERNAL")


@pytest.mark.parametrize(
    "spelling", ["LEVEL1_SOILMET_30MIN", "LEVEL_1_SOILMET_30MIN", "level1_soilmet_30min"]
)
def test_table_lookup_accepts_database_and_legacy_spellings(spelling):
    assert catalogue.get_table(spelling) is catalogue.SOILMET_30MIN


def test_unknown_table_error_lists_the_choices():
    with pytest.raises(catalogue.UnknownTableError, match="LEVEL1_NMDB_1HOUR"):
        catalogue.get_table("LEVEL1_SOILMET_5MIN")


def test_key_name_drops_only_the_level1_prefix():
    assert catalogue.SOILMET_30MIN.key_name == "SOILMET_30MIN"
    assert catalogue.STATUS_1HOUR.key_name == "COSMOS_STATUS_1HOUR"


def test_51_sites_four_closed():
    assert len(catalogue.SITES) == 51
    closed = {s.site_id for s in catalogue.SITES if s.end is not None}
    assert closed == {"WYTH1", "RDMER", "COCHN", "HARWD"}
    assert all(len(s.site_id) == 5 for s in catalogue.SITES)
    with pytest.raises(catalogue.UnknownSiteError):
        catalogue.get_site("NOPE1")


def test_names_outside_the_catalogue_are_refused():
    catalogue.check_column_names(["SITE_ID", "TA", "CTS_MOD"], "a test")
    with pytest.raises(ValueError, match=r"a test names columns .* \['TA_TYPO'\]"):
        catalogue.check_column_names(["TA", "TA_TYPO"], "a test")
