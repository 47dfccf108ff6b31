"""Partitions of the export assets: one per COSMOS table, and one per day and table."""

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

HISTORY_START_DATE = "2013-10-01"
"""The first COSMOS-UK site (CHIMN) started logging in October 2013."""

table_partitions = dg.StaticPartitionsDefinition(list(catalogue.TABLE_NAMES))

daily_table_partitions = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(start_date=HISTORY_START_DATE),
        "table": table_partitions,
    }
)
