"""Resources per deployment: embedded defaults for ``local``, environment-driven for ``prod``."""

from __future__ import annotations

from typing import Any

import dagster as dg

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource


def build_resources() -> dict[str, Any]:
    prod = settings.deployment() == settings.PROD  # fails early on a mistyped deployment name
    return {
        "cosmos": (
            CosmosSource(url=dg.EnvVar("COSMOS_DB_URL"), schema_name=catalogue.SCHEMA)
            if prod
            else CosmosSource(url=settings.sample_db_url())
        ),
    }
