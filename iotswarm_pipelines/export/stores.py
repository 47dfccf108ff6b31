"""Where the live export writes: the one builder of its object store and state backend.

The code location (``resources.py``, from the environment) and ``live-cosmos`` (from its config
file) both build their stores here, so both follow the same rules: payloads go to a bucket or to
a folder, exactly one; the state lives in files or as objects in a bucket, never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.store_resources import (
    LocalObjectStoreResource,
    S3ObjectStoreResource,
    S3StateStoreResource,
    StateStoreResource,
)

EXPORT_PREFIX = "fdri/cosmos_swarm"

Setting = str | dg.EnvVar
"""A value, or a reference to the environment variable holding it (for secrets and per-host
settings, so the value never enters a run's stored config)."""


@dataclass(frozen=True)
class Destination:
    """The export's storage choices, wherever they were read from.

    ``names`` are how the two state locations were spelled where the user set them (config
    keys or environment variables), so a conflict is reported in the user's words.
    """

    prefix: str = EXPORT_PREFIX
    bucket: Setting | None = None
    object_dir: str | None = None
    state_dir: Setting | None = None  # None: the default state folder
    state_bucket: Setting | None = None
    state_prefix: str | None = None  # with state_bucket: S3 state objects under this prefix
    s3: S3Resource | None = None
    names: tuple[str, str] = ("state_dir", "state_prefix")


def build_stores(where: Destination) -> dict[str, Any]:
    """The ``object_store`` and ``state`` resources; ``ValueError`` (one line) on a conflict.

    Dagster code gets the stores they build; other code calls their ``build()``.
    """
    if (where.bucket is None) == (where.object_dir is None):
        raise ValueError("give exactly one destination: a bucket (S3) or an object folder")
    if where.state_dir is not None and where.state_prefix is not None:
        first, second = where.names
        raise ValueError(
            f"{first} and {second} are both set; unset one (local state files or S3 state)"
        )
    s3 = where.s3 or S3Resource()
    store: LocalObjectStoreResource | S3ObjectStoreResource
    if where.bucket is not None:
        store = S3ObjectStoreResource(s3=s3, bucket=where.bucket, prefix=where.prefix)
    else:
        store = LocalObjectStoreResource(root=str(where.object_dir), prefix=where.prefix)
    return {"object_store": store, "state": _state(where, s3)}


def _state(where: Destination, s3: S3Resource) -> StateStoreResource | S3StateStoreResource:
    if where.state_prefix is not None:
        if where.state_bucket is None:
            raise ValueError("S3 state needs a bucket: give the state's bucket with its prefix")
        return S3StateStoreResource(s3=s3, bucket=where.state_bucket, prefix=where.state_prefix)
    if where.state_dir is None:
        return StateStoreResource()
    return StateStoreResource(state_dir=where.state_dir)


def _value(setting: Setting | None) -> str | None:
    return setting.get_value() if isinstance(setting, dg.EnvVar) else setting


def _folder(path: str) -> str:
    return Path(path).expanduser().resolve().as_uri()


def place(where: Destination) -> str:
    """Where the payloads and the state files go, one line with every setting read now: two
    destinations are the same place exactly when their lines are equal (relative folders
    resolved, environment variables read), however each was spelled."""
    prefix = where.prefix.strip("/")
    if where.bucket is not None:
        objects = f"s3://{_value(where.bucket)}/{prefix}"
    else:
        objects = f"{_folder(str(where.object_dir))}/{prefix}"
    if where.state_prefix is not None:
        state = f"s3://{_value(where.state_bucket)}/{where.state_prefix.strip('/')}"
    else:
        state = _folder(_value(where.state_dir) or StateStore().state_dir)
    return f"objects {objects.rstrip('/')}, state {state}"
