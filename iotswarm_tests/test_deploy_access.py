"""Who can reach which webserver in the Kubernetes files (deploy/helm/values.yaml, access.yaml).

No cluster here, so the files are checked for the rule they must keep: everyone's way in leads
to the read-only webserver, the launching one is reached through oauth2-proxy only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "helm"
RELEASE = "dagster"
WRITABLE = f"{RELEASE}-dagster-webserver"
READ_ONLY = f"{RELEASE}-dagster-webserver-read-only"


@pytest.fixture(scope="module")
def access() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all((DEPLOY / "access.yaml").read_text()):
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def test_chart_runs_a_read_only_webserver_and_exposes_neither_itself():
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    assert values["dagsterWebserver"]["enableReadOnly"] is True
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert values["ingress"]["enabled"] is False


def test_everyone_reaches_only_the_read_only_webserver_and_operators_only_the_proxy(access):
    [ingress] = access["Ingress"]
    backends = {
        rule["host"]: {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
        for rule in ingress["spec"]["rules"]
    }
    [proxy_service] = access["Service"]
    assert sorted(backends.values(), key=sorted) == sorted(
        [{READ_ONLY}, {proxy_service["metadata"]["name"]}], key=sorted
    )
    assert all(WRITABLE not in names for names in backends.values())


def test_oauth2_proxy_fronts_the_launching_webserver(access):
    [deployment] = access["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert args["upstream"] == f"http://{WRITABLE}:80"
    assert args["provider"] and args["allowed-group"]
    secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {
        "OAUTH2_PROXY_CLIENT_ID",
        "OAUTH2_PROXY_CLIENT_SECRET",
        "OAUTH2_PROXY_COOKIE_SECRET",
    }
    assert not any("secret" in arg for arg in container["args"])  # never on a command line


def test_only_the_proxy_may_reach_the_launching_webserver_pods(access):
    [policy] = access["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"component": "dagster-webserver"}
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    [source] = rule["from"]
    proxy_labels = access["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= proxy_labels.items()


def test_no_credential_is_filled_in(access):
    for secret in access["Secret"]:
        assert set(secret["stringData"].values()) == {""}, secret["metadata"]["name"]
