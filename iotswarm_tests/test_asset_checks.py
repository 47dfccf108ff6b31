"""The export's asset checks on real SQLite sources, real state files and a real instance."""

from datetime import timedelta

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import health
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.assets import cosmos_live_export
from iotswarm_pipelines.export.checks import check_key
from iotswarm_pipelines.export.definitions import defs
from iotswarm_pipelines.export.health import Check, check_name
from iotswarm_pipelines.export.pipeline import export_table, utc_now
from iotswarm_tests.export_fixtures import (
    PREFIX,
    SOILMET,
    insert_rows,
    local_store,
    make_rows,
    source,
    state_store,
)

FRESHNESS = check_name(Check.FRESHNESS, catalogue.SOILMET_30MIN)
STATE_HEALTH = check_name(Check.STATE_HEALTH, catalogue.SOILMET_30MIN)
COMPLETENESS = check_name(Check.EXPORT_COMPLETENESS, catalogue.SOILMET_30MIN)


@pytest.fixture
def setup(tmp_path, cosmos_url):
    """Two sites of SOILMET with six rows each, all within the export's fallback window."""
    newest = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    times = [newest - timedelta(minutes=30 * i) for i in range(6)]
    for site in ("ALIC1", "BALRD"):
        insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, site, times))
    resources = {
        "cosmos": source(cosmos_url),
        "object_store": local_store(tmp_path),
        "state": state_store(tmp_path),
    }
    return resources, newest


def export(resources) -> None:
    export_table(
        catalogue.SOILMET_30MIN,
        source=resources["cosmos"],
        store=resources["object_store"],
        state=resources["state"],
    )


def run_checks(resources, instance, *names: str) -> dict[str, dg.AssetCheckEvaluation]:
    """The health job as the schedule launches it (or, with names, as the UI runs a few)."""
    job = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).resolve_job_def(
        "cosmos_health_checks"
    )
    if names:
        kinds = {check_name(kind, catalogue.SOILMET_30MIN): kind for kind in Check}
        keys = {check_key(kinds[name], catalogue.SOILMET_30MIN) for name in names}
        job = job.get_subset(asset_check_selection=keys)
    result = job.execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialize(resources, instance, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cosmos_live_export],
        partition_key=SOILMET,
        resources=resources,
        instance=instance,
        run_config={"ops": {cosmos_live_export.op.name: {"config": config}}},
        raise_on_error=False,
    )


def value(evaluation: dg.AssetCheckEvaluation, name: str):
    return evaluation.metadata[name].value


# --- the rules -------------------------------------------------------------------------------


def test_thresholds_follow_each_table_cadence():
    one_minute = catalogue.get_table("LEVEL1_PRECIP_1MIN")
    assert health.freshness_threshold(one_minute) == timedelta(minutes=15)
    assert health.FRESHNESS_THRESHOLDS[SOILMET] == timedelta(minutes=90)
    assert health.FRESHNESS_THRESHOLDS["LEVEL1_NMDB_1HOUR"] == timedelta(hours=3)
    assert set(health.FRESHNESS_THRESHOLDS) == set(catalogue.TABLE_NAMES)
    assert FRESHNESS == "level1_soilmet_30min_freshness"


def test_a_never_seen_site_is_measured_from_where_its_first_export_starts():
    now = utc_now()
    newest = {"ALIC1": now - timedelta(hours=1), "WYTH1": now - timedelta(days=30)}
    lags = health.site_lags(newest, state_rules.empty_state(), now, fallback_hours=3)
    assert lags == {"ALIC1": timedelta(hours=2), "WYTH1": timedelta(0)}


# --- freshness -------------------------------------------------------------------------------


def test_freshness_passes_once_exported_and_fails_on_a_stale_watermark(setup):
    resources, newest = setup
    export(resources)
    with dg.instance_for_test() as instance:
        fresh = run_checks(resources, instance, FRESHNESS)[FRESHNESS]
        assert fresh.passed
        assert value(fresh, "lag_seconds") == 0
        assert value(fresh, "threshold_seconds") == 90 * 60

        stale = state_rules.advance(state_rules.empty_state(), {"ALIC1": newest})
        stale["sites"]["BALRD"] = {"site_id": "BALRD", "last_data": newest - timedelta(hours=3)}
        resources["state"].save(catalogue.SOILMET_30MIN, stale)
        late = run_checks(resources, instance, FRESHNESS)[FRESHNESS]
    assert not late.passed and late.severity == dg.AssetCheckSeverity.ERROR
    assert value(late, "lag_seconds") == 3 * 3600
    assert value(late, "sites_behind") == 1 and value(late, "slowest_site") == "BALRD"
    assert "BALRD" in late.description and "\n" not in late.description


# --- state health ----------------------------------------------------------------------------


def test_state_health_passes_when_both_copies_are_readable_and_equal(setup):
    resources, _ = setup
    with dg.instance_for_test() as instance:
        assert run_checks(resources, instance, STATE_HEALTH)[STATE_HEALTH].passed  # no files yet
        export(resources)
        healthy = run_checks(resources, instance, STATE_HEALTH)[STATE_HEALTH]
    assert healthy.passed and value(healthy, "readable_copies") == 2


def empty_state_file(path) -> None:
    path.write_bytes(state_rules.dumps_state(state_rules.empty_state()))


def unlink(path) -> None:
    path.unlink()


def garble(path) -> None:
    path.write_bytes(b"not a pickle")


@pytest.mark.parametrize(
    ("copy", "damage", "problem", "severity"),
    [
        (1, unlink, "missing", dg.AssetCheckSeverity.ERROR),
        (1, garble, "corrupt", dg.AssetCheckSeverity.ERROR),
        (1, empty_state_file, "differ", dg.AssetCheckSeverity.WARN),
        (0, unlink, "missing", dg.AssetCheckSeverity.ERROR),
    ],
    ids=["missing backup", "corrupt backup", "unequal backup", "missing main"],
)
def test_state_health_fails_on_a_bad_copy(setup, copy, damage, problem, severity):
    """All checks run, as the schedule runs them: freshness's load must not hide the damage."""
    resources, _ = setup
    export(resources)
    damage(resources["state"].paths(catalogue.SOILMET_30MIN)[copy])
    with dg.instance_for_test() as instance:
        evaluation = run_checks(resources, instance)[STATE_HEALTH]
    assert not evaluation.passed and evaluation.severity == severity
    assert problem in evaluation.description and "\n" not in evaluation.description


# --- export completeness ---------------------------------------------------------------------


def test_each_export_run_evaluates_its_own_tables_checks(setup):
    resources, _ = setup
    with dg.instance_for_test() as instance:
        result = materialize(resources, instance)
        assert result.success
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        scheduled = run_checks(resources, instance)
    assert set(evaluations) == {COMPLETENESS, STATE_HEALTH, FRESHNESS}
    assert all(e.passed for e in evaluations.values())
    assert {e.asset_key for e in evaluations.values()} == {dg.AssetKey(f"health_{SOILMET}")}
    evaluation = evaluations[COMPLETENESS]
    assert (value(evaluation, "payloads"), value(evaluation, "objects")) == (12, 12)
    assert value(evaluation, "run_id") == result.run_id
    assert scheduled[COMPLETENESS].passed and value(scheduled[COMPLETENESS], "objects") == 12
    assert len(scheduled) == 4 * len(catalogue.TABLE_NAMES)  # with each table's last run


def test_a_run_with_failed_objects_fails_completeness_until_a_full_run(setup, tmp_path):
    resources, _ = setup
    # The store's folder takes files (its check passes), but no object fits where it belongs.
    objects = tmp_path / "objects" / PREFIX.split("/")[0]
    objects.parent.mkdir()
    objects.write_text("a file where the objects' folder should be")
    with dg.instance_for_test() as instance:
        failed = materialize(resources, instance)
        assert not failed.success
        [evaluation] = failed.get_asset_check_evaluations()  # only completeness: it failed
        assert not evaluation.passed
        assert (value(evaluation, "payloads"), value(evaluation, "failed")) == (12, 12)
        assert value(evaluation, "missing") == 12

        dry = materialize(resources, instance, dry_run=True)
        assert dry.success and dry.get_asset_check_evaluations() == []
        assert not run_checks(resources, instance, COMPLETENESS)[COMPLETENESS].passed

        objects.unlink()
        assert materialize(resources, instance).success
        assert run_checks(resources, instance, COMPLETENESS)[COMPLETENESS].passed


def test_an_export_of_another_table_leaves_a_failed_check_as_it_was(setup):
    """The health assets are never materialized: a result stays until its own checks run."""
    resources, newest = setup
    stale = state_rules.advance(state_rules.empty_state(), {"ALIC1": newest - timedelta(hours=5)})
    resources["state"].save(catalogue.SOILMET_30MIN, stale)
    other = "LEVEL1_NMDB_1HOUR"
    hourly = [newest.replace(minute=0) - timedelta(hours=i) for i in range(2)]
    insert_rows(resources["cosmos"].url, other, make_rows(other, "ALIC1", hourly))
    with dg.instance_for_test() as instance:
        assert not run_checks(resources, instance, FRESHNESS)[FRESHNESS].passed
        other_run = dg.materialize(
            [cosmos_live_export], partition_key=other, resources=resources, instance=instance
        )
        assert other_run.success
        assert {e.asset_key for e in other_run.get_asset_check_evaluations()} == {
            dg.AssetKey(f"health_{other}")
        }
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [check_key(Check.FRESHNESS, catalogue.SOILMET_30MIN)]
        )[check_key(Check.FRESHNESS, catalogue.SOILMET_30MIN)]
        assert latest.status.value == "FAILED"

        assert materialize(resources, instance).success  # the fix: export the stale table
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [check_key(Check.FRESHNESS, catalogue.SOILMET_30MIN)]
        )[check_key(Check.FRESHNESS, catalogue.SOILMET_30MIN)]
    assert latest.status.value == "SUCCEEDED"


# --- the verdict the Catalog shows (issue 22, item 6) ----------------------------------------


def test_the_verdict_is_healthy_only_when_every_check_passed():
    passed = health.Outcome(True, "SOILMET: fine")
    behind = health.Outcome(False, "SOILMET: 2 site(s) more than 1:30:00 behind the source")
    healthy = health.verdict(
        catalogue.get_table(SOILMET), {FRESHNESS: passed, STATE_HEALTH: passed}
    )
    assert healthy.passed and healthy.metadata["checks_passed"] == "2 / 2"
    assert healthy.metadata["failed_checks"] == "none"

    stale = health.verdict(catalogue.get_table(SOILMET), {FRESHNESS: behind, STATE_HEALTH: passed})
    assert not stale.passed and stale.metadata["healthy"] is False
    assert stale.metadata["failed_checks"] == FRESHNESS
    assert stale.metadata["checks_passed"] == "1 / 2"
    assert stale.metadata["verdict"] == behind.description == stale.description


def test_the_health_job_materializes_each_health_asset_with_its_verdict(setup):
    """The Catalog lists the health asset by this materialization: it must say what its checks
    say, and the checks of the same run target it (the graph keeps showing them)."""
    resources, newest = setup
    export(resources)
    stale = state_rules.advance(state_rules.empty_state(), {"ALIC1": newest})
    stale["sites"]["BALRD"] = {"site_id": "BALRD", "last_data": newest - timedelta(hours=3)}
    resources["state"].save(catalogue.SOILMET_30MIN, stale)
    with dg.instance_for_test() as instance:
        evaluations = run_checks(resources, instance)
        event = instance.get_latest_materialization_event(dg.AssetKey(f"health_{SOILMET}"))
        materialized = {
            key.path[0].removeprefix("health_")
            for key in instance.get_asset_keys()
            if instance.get_latest_materialization_event(key) and key.path[0].startswith("health_")
        }
    assert materialized == set(catalogue.TABLE_NAMES)
    assert event is not None and event.asset_materialization is not None
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert metadata["healthy"] is False and metadata["failed_checks"] == FRESHNESS
    assert metadata["verdict"] == evaluations[FRESHNESS].description
    assert "behind the source" in metadata["verdict"]
    assert metadata["checks_passed"] == "3 / 4"
    assert {e.target_materialization_data for e in evaluations.values()} != {None}


def test_executing_one_check_records_no_health_materialization(setup):
    resources, _ = setup
    with dg.instance_for_test() as instance:
        run_checks(resources, instance, FRESHNESS)
        assert instance.get_latest_materialization_event(dg.AssetKey(f"health_{SOILMET}")) is None
