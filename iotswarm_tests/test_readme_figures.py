"""The README's figures about the demo are true.

It said "all 51 sites" where the demo's sample (the last two days) holds the 47 sites open now
(four COSMOS-UK sites are closed), and "about a minute" for a demo that took minutes on a fresh
clone. The site count is checked against the catalogue; the time against what was measured
(written in the README with how it was measured).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from iotswarm_pipelines.cosmos import catalogue

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _open_sites() -> int:
    now = datetime.now(UTC).replace(tzinfo=None)
    return sum(site.is_open_at(now) for site in catalogue.SITES)


def test_the_readme_counts_the_sites_the_sample_holds():
    section = README[README.index("## What the two commands do") : README.index("## First ten")]
    counts = {int(n) for n in re.findall(r"(\d+) sites", section)}
    assert counts == {_open_sites()}, counts
    assert "all 51 sites" not in README


def test_the_readme_says_how_long_the_demo_took_and_how_it_was_measured():
    first = README[README.index("## First ten minutes") :]
    first = first[: first.index("```text")]
    assert "about a minute" not in first
    assert re.search(r"\d+ min \d+ s", first), first
    assert "fresh clone" in first and "measured" in first.lower()
