"""The COSMOS source as a Dagster resource: its settings in Dagster config, ``CosmosSource`` in
the code that reads."""

from __future__ import annotations

from iotswarm_pipelines.adapter_resource import AdapterResource
from iotswarm_pipelines.cosmos.source import CosmosSource, CosmosSourceSettings


class CosmosSourceResource(AdapterResource[CosmosSource], CosmosSourceSettings):
    """The COSMOS database to read; assets and ops get a ``CosmosSource``."""

    adapter = CosmosSource
