"""The code location loads for both deployments, as `dagster dev` and production load it."""

import importlib.util

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue


def load_definitions(monkeypatch, deployment: str):
    """A fresh copy of the code location module; the one other tests imported stays as it is."""
    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", deployment)
    spec = importlib.util.find_spec("iotswarm_pipelines.definitions")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("deployment", ["local", "prod"])
def test_code_location_loads_for_each_deployment(monkeypatch, deployment):
    module = load_definitions(monkeypatch, deployment)
    dg.Definitions.validate_loadable(module.defs)
    repo = module.defs.get_repository_def()
    assert {"cosmos", "state", "object_store", "mqtt"} <= set(repo.get_top_level_resources())
    assert repo.has_job("swarm_job")
    sensors = {s.name for s in repo.sensor_defs}
    assert len(sensors) >= len(catalogue.TABLE_NAMES)


def test_assets_have_groups_kinds_owners_and_the_export_checks(monkeypatch):
    asset_graph = load_definitions(monkeypatch, "local").defs.resolve_asset_graph()
    expected = {
        "cosmos/live_export": ("cosmos_export", {"s3"}),
        "cosmos/history_export": ("cosmos_history", {"s3"}),
        "cosmos/reconciliation": ("cosmos_reconciliation", {"s3"}),
        "health_LEVEL1_SOILMET_30MIN": ("cosmos_export", set()),
        "swarm/report": ("device_swarm", {"mqtt", "report"}),
    }
    for key, (group, kinds) in expected.items():
        spec = asset_graph.get(dg.AssetKey.from_user_string(key))
        assert spec.group_name == group, key
        assert spec.kinds == kinds, key
        assert spec.owners == ["team:fdri-cosmos"], key
        assert spec.description, key
    checks = {key.to_user_string() for key in asset_graph.asset_check_keys}
    assert len(checks) == 4 * len(catalogue.TABLE_NAMES) + 1
    for table in catalogue.TABLE_NAMES:
        for kind in ("freshness", "state_health", "export_completeness", "last_run"):
            # The table first: the UI's sidebar cuts long names off at the end.
            assert f"health_{table}:{table.lower()}_{kind}" in checks
    assert "swarm/report:delivery" in checks


def test_history_is_in_its_own_group_and_unpartitioned(monkeypatch):
    """ "Materialize all" of the export group must not reach it, nor show 24,000 missing days."""
    asset_graph = load_definitions(monkeypatch, "local").defs.resolve_asset_graph()
    export_group = {
        key.to_user_string()
        for key in asset_graph.get_all_asset_keys()
        if asset_graph.get(key).group_name == "cosmos_export"
    }
    assert "cosmos/history_export" not in export_group
    assert "cosmos/reconciliation" not in export_group  # day x table too
    assert asset_graph.get(dg.AssetKey(["cosmos", "history_export"])).partitions_def is None


def test_a_mistyped_deployment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "production")
    from iotswarm_pipelines.resources import build_resources

    with pytest.raises(ValueError, match="set it to one of"):
        build_resources()


@pytest.mark.parametrize("job", ["swarm_job", "cosmos_history_export_job"])
def test_launchpads_offer_the_tables_as_a_choice(monkeypatch, job):
    """Not free text: a launchpad lists the catalogue's tables."""
    from dagster._config import ConfigTypeKind

    job_def = load_definitions(monkeypatch, "local").defs.resolve_job_def(job)
    snap = job_def.get_job_snapshot().config_schema_snapshot
    enums = [t for t in snap.all_config_snaps_by_key.values() if t.kind == ConfigTypeKind.ENUM]
    assert [[v.value for v in t.enum_values] for t in enums] == [list(catalogue.TABLE_NAMES)]
