"""Partitions of the export's assets: one per COSMOS table, and one per day and table."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

HISTORY_START_DATE = date(2013, 10, 1)
"""The first COSMOS-UK site (CHIMN) started logging in October 2013: no history before it."""

table_partitions = dg.StaticPartitionsDefinition(list(catalogue.TABLE_NAMES))


def partition_table(key: str) -> catalogue.Table:
    """The table a partition key (of ``table_partitions``, or a ``table`` dimension) names: a
    key is a name, looked up once where a run reads it."""
    return catalogue.get_table(key)


RECONCILE_DAYS = 92
"""How many past days the reconciliation's partitions hold (about three months): its partitions
page opens on the days an operator reconciles, not on 24,000 cells since 2013. Older days are
reconciled with ``live-cosmos reconcile`` (which records only the days the partitions hold)."""


def reconcile_start(today: date) -> date:
    return today - timedelta(days=RECONCILE_DAYS)


daily_table_partitions = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(
            start_date=max(
                reconcile_start(datetime.now(UTC).date()), HISTORY_START_DATE
            ).isoformat()
        ),
        "table": table_partitions,
    }
)
"""Day x table (the reconciliation's) over the last ``RECONCILE_DAYS`` days, in a group of its
own: "Materialize all" of the export group must never select past days."""
