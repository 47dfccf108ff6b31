"""The docs' option tables and environment page are the code's, not a copy that drifts."""

from __future__ import annotations

import re
from pathlib import Path

from iotswarm_pipelines import environment, option_docs

PACKAGE = Path(option_docs.__file__).parent
VARIABLE = re.compile(r"\"((?:IOTSWARM|LIVECOSMOS|COSMOS|AWS)_[A-Z0-9_]*[A-Z0-9])\"")
NOT_VARIABLES = {"COSMOS_STATUS_1HOUR"}  # a table of the old tool


def test_the_docs_hold_exactly_the_generated_tables():
    assert option_docs.stale() == [], f"docs out of date: run {option_docs.COMMAND}"


def test_a_changed_default_makes_the_page_stale(tmp_path):
    for page in option_docs.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        text = (option_docs.ROOT / page).read_text()
        (tmp_path / page).write_text(text.replace("`127.0.0.1`", "`127.0.0.9`"))
    assert option_docs.stale(tmp_path) == ["docs/mqtt-swarm.md"]


def test_every_variable_the_code_reads_is_listed():
    listed = {v.name for group in environment.VARIABLES.values() for v in group}
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in VARIABLE.findall(path.read_text())
        if name not in NOT_VARIABLES
    }
    alerts = (PACKAGE / "notify.py").read_text()
    named |= {"IOTSWARM_ALERT_" + name for name in re.findall(r'PREFIX \+ "(\w+)"', alerts)}
    assert len(named) > 40 and named - listed == set()
