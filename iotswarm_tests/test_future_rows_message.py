"""Rows dated after now at many sites give one sentence, not one per site.

``cosmos-sample --follow`` at speed used to date rows ahead of the clock at all 47 sites: the
error repeated the same sentence 47 times (6 KB on one line) and claimed "the other sites were
exported" when none was. It now says it once: the count, the latest time, the first few sites.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.pipeline import ExportError, export_table
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, local_store, make_rows, state_store

NOW = datetime(2026, 12, 1, 12, 0)
SITES = ("ALIC1", "BALRD", "BUNNY", "CARDT", "CHIMN", "CHOBH", "COCLP")


pytestmark = pytest.mark.usefixtures("fresh_engines")


def _export(tmp_path, url):
    return export_table(
        catalogue.SOILMET_30MIN,
        source=CosmosSource(url=url, retry_backoff_seconds=0.01),
        store=local_store(tmp_path),
        state=state_store(tmp_path),
        fallback_hours=None,
        now=NOW,
    )


def _seed(url, sites, future_at, *, past=True):
    for i, site in enumerate(sites):
        times = [NOW - timedelta(hours=1)] if past else []
        times.append(NOW + future_at + timedelta(minutes=30 * i))
        insert_rows(url, SOILMET, make_rows(SOILMET, site, times))


def test_future_rows_at_every_site_say_so_once_and_that_nothing_was_exported(tmp_path, cosmos_url):
    _seed(cosmos_url, SITES, timedelta(hours=3), past=False)
    with pytest.raises(ExportError) as caught:
        _export(tmp_path, cosmos_url)
    text = str(caught.value)
    assert text.count("later than now plus the tolerance") == 1, text
    assert "7 site(s)" in text and "no site was exported" in text
    assert "the other sites were exported" not in text
    latest = NOW + timedelta(hours=3, minutes=30 * 6)
    assert f"{latest:%Y-%m-%d %H:%M:%S}" in text
    assert "ALIC1, BALRD, BUNNY" in text and "and 4 more" in text
    assert len(text) < 600, text


def test_future_rows_at_some_sites_say_the_others_were_exported(tmp_path, cosmos_url):
    _seed(cosmos_url, SITES[:2], timedelta(hours=3))
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "HOLLN", [NOW - timedelta(hours=1)]))
    with pytest.raises(ExportError) as caught:
        _export(tmp_path, cosmos_url)
    text = str(caught.value)
    assert "2 site(s)" in text and "the other sites were exported" in text
    assert text.count("later than now plus the tolerance") == 1, text


def test_future_rows_at_every_site_after_some_rows_say_what_was_sent(tmp_path, cosmos_url):
    _seed(cosmos_url, SITES[:3], timedelta(hours=3))
    with pytest.raises(ExportError) as caught:
        _export(tmp_path, cosmos_url)
    text = str(caught.value)
    assert "every site stopped" in text and "rows before them were exported" in text
