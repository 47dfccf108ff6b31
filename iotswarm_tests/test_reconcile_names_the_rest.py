"""``live-cosmos reconcile`` lists the first missing rows of a site and says how many more.

It printed "27 missing" and then three times per site, with nothing saying 24 more existed.
"""

from __future__ import annotations

from iotswarm_tests.export_fixtures import local_store
from iotswarm_tests.test_reconcile_cli import config, reconcile  # noqa: F401 (fixture)


def test_missing_rows_beyond_the_first_three_are_counted(config, tmp_path, capsys):  # noqa: F811
    store = local_store(tmp_path)
    for key in store.list_keys()[10:20]:
        store._path(key).unlink()
    assert reconcile(config, "all", "--since", "2024-06-01", "--until", "2024-06-01") == 1
    out = capsys.readouterr().out
    assert "10 missing" in out
    [line] = [line for line in out.splitlines() if line.strip().startswith("ALIC1")]
    assert line.count("2024-06-01T") == 3 and line.endswith("and 7 more"), line
