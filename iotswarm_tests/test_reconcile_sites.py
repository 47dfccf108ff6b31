"""Reconciliation matches configured sites as the export does (issue 25 item 1).

The source may store ``alic1`` while the config says ``ALIC1`` (or the other way round): the
export reads the stored ID, so reconciliation must check that same ID, and a configured site that
matches no rows is an error, never a day called complete after checking nothing.
"""

from __future__ import annotations

import random
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import dispose_engines
from iotswarm_pipelines.export import cli, keys
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_pipelines.export.reconcile import reconcile_day
from iotswarm_pipelines.export.sites import UnknownSiteError
from iotswarm_tests.export_fixtures import (
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    source,
    sqlite_url,
    state_store,
)

DAY = date(2024, 6, 1)
TABLE = catalogue.get_table(SOILMET)
START = datetime(2024, 6, 1, 0, 30)
NOW = datetime(2024, 6, 3, 12, 0)
EPOCH = datetime(1970, 1, 1)
CASES = ("upper", "lower", "mixed")


def spelled(site: str, case: str) -> str:
    return {"upper": site.upper(), "lower": site.lower(), "mixed": site[:1] + site[1:].lower()}[
        case
    ]


def exported(folder: Path, stored_ids: list[str], rows: int = 96):
    """``rows`` half-hours of each stored ID from DAY on, all exported: (url, store, state)."""
    url = sqlite_url(folder)
    times = [START + timedelta(minutes=30 * i) for i in range(rows)]
    for table in catalogue.TABLE_NAMES:  # the other tables exist, empty
        insert_rows(url, table, [])
    for site in stored_ids:
        insert_rows(url, SOILMET, make_rows(SOILMET, site, times))
    store, state = local_store(folder), state_store(folder)
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(url),
        store=store,
        state=state,
        fallback_hours=None,
        now=NOW,
    )
    return url, store, state


def delete_of_day(store, site: str, count: int, rng: random.Random) -> list[str]:
    """Delete ``count`` of the site's objects stamped on DAY; their keys."""
    lo, hi = datetime(2024, 6, 1), datetime(2024, 6, 2)
    day_keys = [
        k
        for k in store.list_keys()
        if f"/{site}/" in k and lo < EPOCH + timedelta(milliseconds=keys.key_time_ms(k)) <= hi
    ]
    gone = rng.sample(day_keys, count)
    for key in gone:
        store._path(key).unlink()
    return gone


@pytest.mark.parametrize(
    ("configured", "missing"),
    [(["alic1"], 10), (["ALIC1"], 10), (["alic1", "BALRD"], 15), (["Alic1", "balrd"], 15)],
)
def test_sites_stored_in_lower_case_are_checked_and_healed(tmp_path, configured, missing):
    """The issue's case: ``alic1`` stored, 10 of its objects and 5 of BALRD's deleted."""
    url, store, state = exported(tmp_path, ["alic1", "BALRD"])
    rng = random.Random(25)
    delete_of_day(store, "alic1", 10, rng)
    delete_of_day(store, "BALRD", 5, rng)

    def run(**options):
        return reconcile_day(
            TABLE, DAY, source=source(url), store=store, state=state, sites=configured, **options
        )

    result = run()
    assert result.missing == missing and not result.complete
    assert run(heal=True).healed == missing
    assert run().complete


@pytest.mark.parametrize("configured", [["CHIMN"], ["alic1", "chimn"]])
def test_a_configured_site_without_rows_is_an_error_not_complete(tmp_path, configured):
    url, store, state = exported(tmp_path, ["alic1"])
    with pytest.raises(UnknownSiteError) as caught:
        reconcile_day(TABLE, DAY, source=source(url), store=store, state=state, sites=configured)
    assert str(caught.value) == (
        f"COSMOS site {configured[-1]!r} has no rows in {SOILMET} (in any case), so there is "
        "nothing to check it against; sites with rows there: alic1"
    )


def write_config(folder: Path, url: str, sites: str) -> Path:
    path = folder / "livecosmos.cfg"
    path.write_text(
        f"url='{url}'\nobject_dir='{folder / 'objects'}'\nstate_dir='{folder / 'state'}'\n"
        f"bucket_prefix='fdri/cosmos_swarm'\nsites='{sites}'\n"
    )
    return path


def reconcile_cli(config: Path, *args: str) -> int:
    return cli.run(["reconcile", str(config), SOILMET, "--since", "2024-06-01", *args])


@pytest.mark.parametrize("sites", ["alic1", "ALIC1"])
def test_the_command_reports_a_lower_case_sites_missing_rows(tmp_path, capsys, sites):
    url, store, _ = exported(tmp_path, ["alic1", "BALRD"])
    delete_of_day(store, "alic1", 10, random.Random(1))
    config = write_config(tmp_path, url, sites)

    assert reconcile_cli(config, "--until", "2024-06-01") == 1
    out = capsys.readouterr().out
    assert "10 rows missing on 1 of 1 day(s) x 1 table(s)" in out
    assert "complete" not in out.splitlines()[-1]
    assert reconcile_cli(config, "--until", "2024-06-01", "--heal") == 0
    assert reconcile_cli(config, "--until", "2024-06-01") == 0


def test_the_command_refuses_a_configured_site_without_rows_in_one_line(tmp_path, capsys):
    url, _, _ = exported(tmp_path, ["alic1"])
    config = write_config(tmp_path, url, "alic1,CHIMN")

    assert reconcile_cli(config, "--until", "2024-06-01") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    # The command's own lines (another test's stray thread may write to stderr too).
    [line] = [x for x in captured.err.splitlines() if x.startswith(f"{cli.PROG} ")]
    assert line == (
        f"{cli.PROG} reconcile: error: COSMOS site 'CHIMN' has no rows in {SOILMET} (in any "
        "case), so there is nothing to check it against; sites with rows there: alic1"
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stored_case=st.sampled_from(CASES),
    configured_case=st.sampled_from((None, *CASES)),
    deleted=st.lists(st.integers(0, 2), min_size=0, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_any_spelling_in_source_and_config_finds_exactly_the_deleted_rows(
    stored_case, configured_case, deleted, seed
):
    """Property: whatever the case of the stored and the configured IDs, reconciliation names
    exactly the deleted rows as missing, heals them, and then finds the day complete."""
    stored = [spelled(site, stored_case) for site in ("ALIC1", "BALRD", "CHIMN")]
    configured = None if configured_case is None else [spelled(s, configured_case) for s in stored]
    with tempfile.TemporaryDirectory(prefix="iotswarm-rec-sites-") as folder:
        url, store, state = exported(Path(folder), stored, rows=52)  # the day and a bit
        rng = random.Random(seed)
        counts = {stored[i]: deleted.count(i) for i in set(deleted)}
        for site, count in counts.items():
            delete_of_day(store, site, count, rng)

        def run(**options):
            return reconcile_day(
                TABLE,
                DAY,
                source=source(url),
                store=store,
                state=state,
                sites=configured,
                **options,
            )

        result = run()
        by_site = {report.site_id: len(report.missing) for report in result.sites}
        assert {s: n for s, n in by_site.items() if n} == {s: n for s, n in counts.items() if n}
        assert run(heal=True).healed == sum(counts.values())
        assert run().complete
        dispose_engines()
