"""The demo's export step: every table of the sample database through the live export asset,
then the health job, so the UI it points to shows every table's verdict.

Runs are recorded in the instance of ``DAGSTER_HOME`` when it is set (``make demo`` sets it), so
``make dev`` lists them afterwards; otherwise a temporary instance is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export.assets import (
    cosmos_live_export,
    execute_live_export,
    run_tags,
    summary_from_metadata,
)
from iotswarm_pipelines.export.commands import progress_bar
from iotswarm_pipelines.export.health_assets import execute_health_checks
from iotswarm_pipelines.export.summary_text import format_summary
from iotswarm_pipelines.labels import Trigger, trigger_tags

DEMO_FALLBACK_HOURS = 24 * 365
"""Sites the state has never seen start a year back, so the whole sample goes out once."""

DEMO_BATCH_SIZES = {catalogue.PRECIP_1MIN: 60, catalogue.PRECIP_RAINE_1MIN: 60}
"""Hourly payloads for the 1-minute tables: the demo writes thousands of files, not 100,000s."""


def _run_config(table: catalogue.Table) -> dict[str, Any]:
    config: dict[str, Any] = {"fallback_hours": DEMO_FALLBACK_HOURS}
    if table in DEMO_BATCH_SIZES:
        config["batch_size"] = DEMO_BATCH_SIZES[table]
    return {
        "ops": {cosmos_live_export.op.name: {"config": config}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


def _instance() -> dg.DagsterInstance | None:
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None


def run_demo_export(resources: Mapping[str, Any], echo: Callable[[str], None] | None = None) -> str:
    """Export each table of the local sample database into the local object folder.

    ``resources`` are the deployment's (``resources.build_resources``), which the caller
    chooses: the export side never reaches up to the code location's module. Returns the
    per-table summaries (rows, payloads, objects, new watermarks) as text; ``echo`` gets each
    one as soon as its table is done, while a progress bar shows the rows read.
    """
    instance = _instance()
    lines = []
    for table in catalogue.TABLES.values():
        tags = {**run_tags(table), **trigger_tags(Trigger.CLI)}
        with progress_bar(table):
            result = execute_live_export(table, resources, _run_config(table), instance, tags)
        if not result.success:
            raise RuntimeError(
                f"the demo's export of {table.name} failed; see the run in `make dev`"
            )
        [event] = result.asset_materializations_for_node(cosmos_live_export.op.name)
        summary = summary_from_metadata(table, event.metadata)
        lines.append(
            format_summary(summary, resources["object_store"].build().describe(), max_sites=2)
        )
        if echo is not None:
            echo(lines[-1])
    return "\n".join(lines)


def run_demo_health(resources: Mapping[str, Any]) -> str:
    """Every table's checks after the demo's exports, recorded as a health run.

    Without it the Catalog shows a dash for each health asset until the health schedule's first
    tick; with it, ``make dev`` opens on the verdicts. Raises ``RuntimeError`` naming each
    unhealthy table: right after a full export every table must be healthy.
    """
    verdicts = execute_health_checks(resources, _instance(), trigger_tags(Trigger.CLI))
    failed = [verdict.description for verdict in verdicts if not verdict.passed]
    if failed:
        raise RuntimeError("the demo's health checks failed: " + "; ".join(failed))
    return f"health: {len(verdicts)} of {len(verdicts)} tables healthy (every check passed)"
