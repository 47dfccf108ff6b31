"""The export's stores as Dagster resources: their settings in Dagster config, the plain store
(``object_store``, ``state_store``, ``state_s3``) in the code that writes.

An S3 store's connection is a nested dagster-aws ``S3Resource`` here, so its credentials can
be ``dg.EnvVar``s and one connection serves the payloads, the state and the step outputs.
"""

from __future__ import annotations

from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.adapter_resource import AdapterResource
from iotswarm_pipelines.export.object_store import (
    LocalObjectStore,
    LocalObjectStoreSettings,
    S3ObjectStore,
    S3ObjectStoreSettings,
)
from iotswarm_pipelines.export.state_s3 import S3StateStore, S3StateStoreSettings
from iotswarm_pipelines.export.state_store import StateStore, StateStoreSettings


class S3ObjectStoreResource(AdapterResource[S3ObjectStore], S3ObjectStoreSettings):
    """Payload objects in an S3 bucket; assets get an ``S3ObjectStore``."""

    adapter = S3ObjectStore
    s3: S3Resource  # type: ignore[assignment]


class LocalObjectStoreResource(AdapterResource[LocalObjectStore], LocalObjectStoreSettings):
    """Payload objects as files in a folder; assets get a ``LocalObjectStore``."""

    adapter = LocalObjectStore


class StateStoreResource(AdapterResource[StateStore], StateStoreSettings):
    """Watermark state files; assets and sensors get a ``StateStore``."""

    adapter = StateStore


class S3StateStoreResource(AdapterResource[S3StateStore], S3StateStoreSettings):
    """Watermark state as S3 objects; assets and sensors get an ``S3StateStore``."""

    adapter = S3StateStore
    s3: S3Resource  # type: ignore[assignment]
