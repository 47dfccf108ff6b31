"""The shipped Prometheus alert rules and configs, proved by Prometheus' own tools.

``promtool check rules`` / ``promtool test rules`` (the unit tests with series under
deploy/prometheus/tests/) and ``amtool check-config`` run here; under ``CI=true`` a missing tool
fails (Debian's ``prometheus`` and ``prometheus-alertmanager`` packages, scripts/services.sh).
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from iotswarm_tests.observability import metric_types, prometheus_tool, undocumented

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "iotswarm-rules.yml"
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DOCS = ROOT / "docs" / "alerts.md"


def _run(*argv: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def _passes(*argv: str) -> None:
    done = _run(*argv)
    assert done.returncode == 0, f"{' '.join(argv[:3])} failed:\n{done.stdout}\n{done.stderr}"


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules_passes():
    _passes(prometheus_tool("promtool"), "check", "rules", str(RULES))


def test_promtool_unit_tests_pass():
    assert UNIT_TESTS, "no unit tests under deploy/prometheus/tests"
    _passes(prometheus_tool("promtool"), "test", "rules", *map(str, UNIT_TESTS))


def test_a_wrong_expectation_fails_promtool(tmp_path):
    """The harness would notice a rule that stopped matching its test."""
    tests = yaml.safe_load((PROMETHEUS / "tests" / "export.yml").read_text())
    tests["rule_files"] = [str(RULES)]
    tests["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["table"] = "WRONG"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(tests))
    done = _run(prometheus_tool("promtool"), "test", "rules", str(broken))
    assert done.returncode != 0
    assert "WRONG" in done.stdout + done.stderr


def test_sample_prometheus_config_is_valid():
    _passes(prometheus_tool("promtool"), "check", "config", "prometheus.yml")


def test_sample_alertmanager_config_is_valid():
    _passes(prometheus_tool("amtool"), "check-config", "alertmanager.yml")


def test_every_alert_is_unit_tested_and_documented():
    tested = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {
                check["alertname"] for check in case["alert_rule_test"] if check["exp_alerts"]
            }
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - tested == set(), "alerts no unit test fires"
    docs = DOCS.read_text()
    assert {a for a in alerts if f"### {a}" not in docs} == set(), "alerts docs/alerts.md lacks"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_alert_says_what_and_where(rule):
    assert rule["labels"]["severity"] in ("warning", "critical")
    subject = (
        "$labels.table"
        if "iotswarm_export" in rule["expr"] or "reconcile" in rule["expr"]
        else "$labels.swarm"
    )
    for annotation in ("summary", "description"):
        assert subject in rule["annotations"][annotation]
    assert rule["annotations"]["runbook"] == f"docs/alerts.md#{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_documented_metrics(rule):
    assert undocumented(rule["expr"]) == set()


def test_metric_name_list_matches_the_metrics_docs():
    """Once docs/metrics.md exists, the list copied here must be its names, not a stale copy."""
    docs = ROOT / "docs" / "metrics.md"
    if not docs.exists():
        pytest.skip("docs/metrics.md is not written yet")
    text = docs.read_text()
    assert {name for name in metric_types() if name not in text} == set()
