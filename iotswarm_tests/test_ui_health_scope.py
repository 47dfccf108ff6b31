"""Health describes the deployment's own destination (issue 22, item 5).

A ``live-cosmos`` run recorded in the deployment's instance but writing elsewhere (another
``state_dir``, another object folder) is tagged with its destination as a one-off and judges no
health check; a run to the deployment's own folders is judged as before. Real instance, real
SQLite source and folders; the deployment is the local one of ``IOTSWARM_DATA_DIR``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import checks, cli, health, scope
from iotswarm_tests import test_export_cli
from iotswarm_tests.dagster_server import local_deployment
from iotswarm_tests.export_fixtures import SOILMET

database = test_export_cli.database  # the command line tests' source: two recent rows a table


@pytest.fixture
def deployment(tmp_path) -> Iterator[Path]:
    """A local deployment over ``tmp_path/data`` with its instance; returns DAGSTER_HOME."""
    with local_deployment(tmp_path / "data"):
        home = tmp_path / "dagster_home"
        home.mkdir()
        yield home


def config(tmp_path: Path, url: str, objects: Path, state: Path) -> str:
    path = tmp_path / f"{state.name}.cfg"
    path.write_text(
        f"url='{url}'\nobject_dir='{objects}'\nstate_dir='{state}'\n"
        "bucket_prefix='fdri/cosmos_swarm'\n"
    )
    return str(path)


def judged_checks(home: Path) -> set[str]:
    """The names of the table's health checks that have a result in the instance."""
    keys = [checks.check_key(kind, catalogue.SOILMET_30MIN) for kind in health.Check]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {key.name for key in latest}


def only_run(home: Path) -> dg.DagsterRun:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    return run


def test_a_run_to_another_destination_is_a_one_off_and_judges_no_health(
    tmp_path, database, deployment
):
    other = config(tmp_path, database, tmp_path / "elsewhere", tmp_path / "other_state")
    assert cli.run([other, SOILMET, "--dagster-home", str(deployment)]) == cli.EXIT_OK

    run = only_run(deployment)
    assert run.tags[scope.SCOPE_TAG] == scope.ONE_OFF
    assert str(tmp_path / "other_state") in run.tags[scope.DESTINATION_TAG]
    assert judged_checks(deployment) == set()


def test_a_run_to_the_deployments_destination_is_judged(tmp_path, database, deployment):
    data = settings.data_dir()
    own = config(tmp_path, database, data / "objects", data / "state")
    assert cli.run([own, SOILMET, "--dagster-home", str(deployment)]) == cli.EXIT_OK

    assert only_run(deployment).tags[scope.SCOPE_TAG] == scope.DEPLOYMENT
    assert judged_checks(deployment) == {
        health.check_name(kind, catalogue.SOILMET_30MIN) for kind in health.Check
    }


def test_the_completeness_check_skips_one_off_exports(tmp_path, database, deployment):
    other = config(tmp_path, database, tmp_path / "elsewhere", tmp_path / "other_state")
    assert cli.run([other, SOILMET, "--dagster-home", str(deployment)]) == cli.EXIT_OK
    with dg.DagsterInstance.from_config(str(deployment)) as instance:
        assert checks.last_export(instance, catalogue.SOILMET_30MIN) is None
