"""The Grafana dashboard (deploy/grafana/) queries only the documented metric names, every one
of them, in PromQL that Prometheus' own parser accepts."""

import json
import re
import subprocess
from pathlib import Path

import yaml

from iotswarm_tests.observability import METRIC, metric_types, prometheus_tool, undocumented

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "iotswarm-dashboard.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$swarm": ".*", "$table": ".*"}


def _model() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [panel for panel in _model()["panels"] if panel["type"] != "row"]


def _exprs() -> list[str]:
    exprs = [target["expr"] for panel in _panels() for target in panel["targets"]]
    variables = _model()["templating"]["list"]
    return exprs + [v["definition"] for v in variables if v["type"] == "query"]


def test_every_query_uses_documented_names_only():
    assert {name for expr in _exprs() for name in undocumented(expr)} == set()


def test_every_documented_metric_is_on_the_dashboard():
    shown = {name for expr in _exprs() for name in METRIC.findall(expr)}
    shown |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    assert set(metric_types()) - shown == set()


def test_every_query_parses_as_promql(tmp_path):
    """Each query as a recording rule, Grafana's variables filled in: promtool parses them."""
    rules = []
    for i, expr in enumerate(e for e in _exprs() if not e.startswith("label_values(")):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_panels_use_the_datasource_variable_and_have_unique_ids():
    panels = _model()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]


def test_panels_do_not_overlap_on_the_grid():
    def cells(panel: dict) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    taken: set[tuple[int, int]] = set()
    for panel in _model()["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert not cells(panel) & taken, panel["title"]
        taken |= cells(panel)
