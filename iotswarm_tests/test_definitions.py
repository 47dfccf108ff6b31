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


def test_a_mistyped_deployment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("IOTSWARM_DEPLOYMENT", "production")
    from iotswarm_pipelines.resources import build_resources

    with pytest.raises(ValueError, match="set it to one of"):
        build_resources()
