"""Partitions of the export's assets: one per COSMOS table, and one per day and table."""

from datetime import date

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

HISTORY_START_DATE = date(2013, 10, 1)
"""The first COSMOS-UK site (CHIMN) started logging in October 2013: no history before it."""

table_partitions = dg.StaticPartitionsDefinition(list(catalogue.TABLE_NAMES))

daily_table_partitions = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(start_date=HISTORY_START_DATE.isoformat()),
        "table": table_partitions,
    }
)
"""Day x table (the reconciliation's), in a group of its own: "Materialize all" of the export
group must never select 24,000 past days."""
