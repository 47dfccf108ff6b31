"""Partitions of the live export: one per COSMOS table."""

from datetime import date

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

HISTORY_START_DATE = date(2013, 10, 1)
"""The first COSMOS-UK site (CHIMN) started logging in October 2013: no history before it."""

table_partitions = dg.StaticPartitionsDefinition(list(catalogue.TABLE_NAMES))
