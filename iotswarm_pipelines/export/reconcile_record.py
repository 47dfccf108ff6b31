"""``live-cosmos reconcile``'s days, recorded in the UI's instance as ``cosmos/reconciliation``.

The command checks days directly (a Dagster run per day would cost seconds each over a month of
five tables), then records each day where a backfill would have: a complete day as a
materialization of its partition with the counts (the cell turns green), an incomplete one as a
run of ``cosmos_reconcile_job`` for that partition, in this process, which measures the day again
(without healing: the command has already healed what it could), records the counts and fails
(the cell turns red, and the run says why). Days older than the partitions hold are not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from iotswarm_pipelines import payloads
from iotswarm_pipelines.export.partitions import daily_table_partitions
from iotswarm_pipelines.export.reconcile_assets import (
    cosmos_reconciliation,
    reconcile_job,
    reconcile_metadata,
)
from iotswarm_pipelines.export.reconciliation import TableDay
from iotswarm_pipelines.labels import Trigger, trigger_tags

RECORDED_BY = "live-cosmos reconcile"


def partition_key(result: TableDay) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": result.day.isoformat(), "table": result.table.name})


class DayRecorder:
    """Records each reconciled day of the command into ``instance``."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        resources: Mapping[str, Any],
        op_config: Mapping[str, Any],
        destination: str,
    ) -> None:
        self.instance = instance
        self.destination = destination
        self.run_config = {
            "ops": {cosmos_reconciliation.op.name: {"config": {**op_config, "heal": False}}},
            # The terminal has the command's own lines; the run's log stays in the instance.
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        }
        self.job = dg.Definitions(
            assets=[cosmos_reconciliation], jobs=[reconcile_job], resources=dict(resources)
        ).resolve_job_def(reconcile_job.name)
        self.valid = set(daily_table_partitions.get_partition_keys())
        self.skipped = 0

    def record(self, result: TableDay) -> None:
        key = partition_key(result)
        if key not in self.valid:
            self.skipped += 1
            return
        if not result.complete:
            self.job.execute_in_process(
                run_config=self.run_config,
                instance=self.instance,
                partition_key=key,
                tags=trigger_tags(Trigger.CLI),
                raise_on_error=False,
            )
            return
        metadata = reconcile_metadata(result, self.destination)
        metadata["recorded_by"] = dg.MetadataValue.text(RECORDED_BY)
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(cosmos_reconciliation.key, partition=key, metadata=metadata)
        )


def op_config(
    sites: list[str] | None, batch_size: int | None, payload_format: payloads.PayloadFormat
) -> dict[str, Any]:
    """The reconciliation run's config from the command's settings."""
    config: dict[str, Any] = {
        "prog_name": payload_format.prog_name,
        "strict_json": payload_format.strict_json,
    }
    if sites is not None:
        config["sites"] = sites
    if batch_size is not None:
        config["batch_size"] = batch_size
    return config
