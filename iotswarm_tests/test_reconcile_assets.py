"""The reconciliation asset, its job and its nightly schedule, on real Dagster instances."""

from datetime import datetime, timedelta

import dagster as dg
import pytest

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.pipeline import export_table, utc_now
from iotswarm_pipelines.export.reconcile_assets import (
    cosmos_reconciliation,
    reconcile_job,
    reconcile_yesterday,
)
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, source

FIRST_DAY = utc_now().date() - timedelta(days=3)
"""Recent days: the partitions hold only the last ``RECONCILE_DAYS``."""
START = datetime.combine(FIRST_DAY, datetime.min.time())
DAYS = (FIRST_DAY.isoformat(), (FIRST_DAY + timedelta(days=1)).isoformat())


@pytest.fixture
def resources(local_objects, local_state, cosmos_url):
    """Two days of ALIC1 and BALRD, exported completely to a local folder."""
    times = [START + timedelta(minutes=30 * (i + 1)) for i in range(96)]
    for site in ("ALIC1", "BALRD"):
        insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, site, times))
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        state=local_state,
        fallback_hours=None,
    )
    return {"cosmos": source(cosmos_url), "object_store": local_objects, "state": local_state}


def key(day: str, table: str = SOILMET) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "table": table})


def materialize(
    resources, instance, day: str, heal: bool = False, **config
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cosmos_reconciliation],
        partition_key=key(day),
        resources=resources,
        instance=instance,
        run_config={"ops": {cosmos_reconciliation.op.name: {"config": {"heal": heal, **config}}}},
        raise_on_error=False,
    )


def numbers(event) -> dict:
    return {name: getattr(value, "value", value) for name, value in event.metadata.items()}


def test_a_complete_day_materializes_with_its_counts(resources):
    with dg.instance_for_test() as instance:
        result = materialize(resources, instance, DAYS[0])
        assert result.success
        [event] = result.asset_materializations_for_node(cosmos_reconciliation.op.name)
    counts = numbers(event)
    assert (counts["rows"], counts["found"], counts["missing"]) == (96, 96, 0)
    assert counts["complete"] is True and counts["problems"] == {}


def test_missing_rows_fail_the_partition_then_a_heal_completes_it(resources):
    store = resources["object_store"]
    [gone] = [k for k in store.list_keys() if "/BALRD/" in k][10:11]
    store._path(gone).unlink()
    asset_key = cosmos_reconciliation.key
    with dg.instance_for_test() as instance:
        failed = materialize(resources, instance, DAYS[0])
        assert not failed.success
        assert "1 missing" in str(failed.failure_data_for_node(cosmos_reconciliation.op.name))
        observed = instance.fetch_observations(asset_key, limit=1).records[0].asset_observation
        counts = numbers(observed)
        assert counts["missing"] == 1 and counts["complete"] is False
        assert list(counts["problems"]) == ["BALRD"]
        # The partition's history leads with the run's own one line: counts, first rows, advice.
        line = failed.failure_data_for_node(cosmos_reconciliation.op.name).user_failure_data
        assert observed.partition == key(DAYS[0])
        assert observed.description == line.description
        assert "1 missing, 0 duplicated, 0 orphaned" in line.description
        assert "; first missing BALRD " in line.description and "heal: true" in line.description
        assert instance.get_materialized_partitions(asset_key) == set()

        healed = materialize(resources, instance, DAYS[0], heal=True)
        assert healed.success
        [event] = healed.asset_materializations_for_node(cosmos_reconciliation.op.name)
        assert (numbers(event)["missing"], numbers(event)["healed"]) == (1, 1)
        assert instance.get_materialized_partitions(asset_key) == {key(DAYS[0])}
    assert gone in store.list_keys()


def test_the_run_config_s_payload_format_and_batch_size_heal_onto_the_export_s_keys(
    local_objects, local_state, cosmos_url
):
    times = [START + timedelta(minutes=30 * (i + 1)) for i in range(96)]
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    old = {"prog_name": "CPU:iotswarm-1.6.10.CR1X", "strict_json": True, "batch_size": 48}
    export_table(
        catalogue.SOILMET_30MIN,
        source=source(cosmos_url),
        store=local_objects,
        state=local_state,
        fallback_hours=None,
        batch_size=48,
        payload_format=payloads.PayloadFormat(old["prog_name"], old["strict_json"]),
    )
    exported = sorted(local_objects.list_keys())
    local_objects._path(exported[0]).unlink()
    resources = {"cosmos": source(cosmos_url), "object_store": local_objects, "state": local_state}
    with dg.instance_for_test() as instance:
        healed = materialize(resources, instance, DAYS[0], heal=True, **old)
        assert healed.success
        [event] = healed.asset_materializations_for_node(cosmos_reconciliation.op.name)
    assert (numbers(event)["missing"], numbers(event)["healed"]) == (48, 48)
    assert sorted(local_objects.list_keys()) == exported  # the export's key, and no other


def test_the_job_reconciles_a_range_of_days_partition_by_partition(resources):
    with dg.instance_for_test() as instance:
        job = dg.Definitions(
            assets=[cosmos_reconciliation], jobs=[reconcile_job], resources=resources
        ).resolve_job_def(reconcile_job.name)
        for day in DAYS:
            assert job.execute_in_process(instance=instance, partition_key=key(day)).success
        done = instance.get_materialized_partitions(cosmos_reconciliation.key)
    assert done == {key(day) for day in DAYS}


def test_bad_run_config_fails_with_one_line(resources):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [cosmos_reconciliation],
            partition_key=key(DAYS[0]),
            resources=resources,
            instance=instance,
            run_config={"ops": {cosmos_reconciliation.op.name: {"config": {"sites": ["NOPE"]}}}},
            raise_on_error=False,
        )
    assert not result.success
    assert "bad run config" in str(result.failure_data_for_node(cosmos_reconciliation.op.name))


def test_a_partition_that_cannot_be_reconciled_records_why(resources):
    resources = {**resources, "cosmos": source("sqlite:////nonexistent/folder/cosmos.sqlite")}
    with dg.instance_for_test() as instance:
        result = materialize(resources, instance, DAYS[0])
        assert not result.success
        [observed] = instance.fetch_observations(cosmos_reconciliation.key, limit=5).records
    observation = observed.asset_observation
    assert observation.partition == key(DAYS[0])
    cause = observation.metadata["cause"].value
    assert "cosmos.sqlite does not exist" in cause and "\n" not in cause
    assert observation.description == f"not reconciled: {cause}"


def test_the_schedule_heals_yesterday_for_every_table_and_is_on_by_default():
    assert reconcile_yesterday.default_status == dg.DefaultScheduleStatus.RUNNING
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=START + timedelta(days=2, hours=1, minutes=30),
        ) as context,
    ):
        requests = list(reconcile_yesterday(context))
    assert [r.partition_key for r in requests] == [
        key(DAYS[1], table) for table in catalogue.TABLE_NAMES
    ]
    assert all(
        r.run_config["ops"][cosmos_reconciliation.op.name]["config"]["heal"] for r in requests
    )
    assert len({r.run_key for r in requests}) == len(catalogue.TABLE_NAMES)
    assert {r.tags["iotswarm/trigger"] for r in requests} == {"schedule"}
