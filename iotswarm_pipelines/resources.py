"""Resources per deployment: embedded defaults for ``local``, environment-driven for ``prod``."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.resource import CosmosSourceResource
from iotswarm_pipelines.export.stores import EXPORT_PREFIX, Destination, build_stores, place
from iotswarm_pipelines.s3 import S3_ENV, split_s3_uri
from iotswarm_pipelines.swarm.resources import MqttResource


def build_resources() -> dict[str, Any]:
    prod = settings.deployment() == settings.PROD  # fails early on a mistyped deployment name
    return {
        "cosmos": (
            CosmosSourceResource(**_source_url(), schema_name=catalogue.SCHEMA)
            if prod
            else CosmosSourceResource(url=settings.sample_db_url())
        ),
        **_export_resources(prod),
        "mqtt": _mqtt_resource(prod),
        **_step_io(prod),
    }


def _source_url() -> dict[str, Any]:
    """``COSMOS_DB_URL``, or ``COSMOS_DB_URL_FILE`` naming a file that holds it (a mounted
    secret: the URL holds the database password, and a file is not inherited by children)."""
    if os.environ.get("COSMOS_DB_URL_FILE"):
        return {"url_file": dg.EnvVar("COSMOS_DB_URL_FILE")}
    return {"url": dg.EnvVar("COSMOS_DB_URL")}


def _set_env(**names: str) -> dict[str, Any]:
    """EnvVars for the variables that are set; unset ones fall back to boto3's own lookup."""
    return {field: dg.EnvVar(name) for field, name in names.items() if os.environ.get(name)}


def s3_resource() -> S3Resource:
    """The production S3 connection (payloads, state, step outputs), settings from ``S3_ENV``."""
    return S3Resource(**_set_env(**S3_ENV))


def _step_io(prod: bool) -> dict[str, Any]:
    """Step outputs as S3 objects at ``IOTSWARM_IO_URI=s3://bucket/prefix`` (production only).

    Unset, Dagster's filesystem IO manager under the instance's storage folder hands outputs
    from step to step, which steps on other machines reach only through a shared disk; with
    it, Celery workers or pods on hosts that share nothing but the network can run any step.
    """
    uri = os.environ.get("IOTSWARM_IO_URI", "").strip()
    if not (prod and uri):
        return {}
    try:
        bucket, prefix = split_s3_uri(uri)
    except ValueError as exc:
        raise ValueError(f"IOTSWARM_IO_URI {exc}") from None
    return {
        "io_manager": S3PickleIOManager(
            s3_resource=s3_resource(), s3_bucket=bucket, s3_prefix=prefix
        )
    }


def _export_resources(prod: bool) -> dict[str, Any]:
    """State files and object store of the live export (see docs/export-storage.md)."""
    return build_stores(export_destination(prod))


def deployment_place() -> str:
    """The deployment's own destination (``stores.place``), from this process's environment:
    the export runs whose destination differs are one-offs, never judged as its health."""
    return place(export_destination(settings.deployment() == settings.PROD))


def export_destination(prod: bool) -> Destination:
    if not prod:
        return Destination(
            object_dir=str(settings.data_dir() / "objects"),
            state_dir=str(settings.data_dir() / "state"),
        )
    s3 = s3_resource()
    # State files in LIVECOSMOS_STATE_DIR (or the default folder), or S3 objects at
    # LIVECOSMOS_STATE_URI=s3://bucket/prefix, through the same connection as the payloads.
    state_bucket = state_prefix = None
    if uri := os.environ.get("LIVECOSMOS_STATE_URI", "").strip():
        try:
            state_bucket, state_prefix = split_s3_uri(uri)
        except ValueError as exc:
            raise ValueError(f"LIVECOSMOS_STATE_URI {exc}") from None
    return Destination(
        s3=s3,
        bucket=dg.EnvVar("LIVECOSMOS_BUCKET"),
        prefix=os.environ.get("LIVECOSMOS_BUCKET_PREFIX", EXPORT_PREFIX),
        state_bucket=state_bucket,
        state_prefix=state_prefix,
        names=("LIVECOSMOS_STATE_DIR", "LIVECOSMOS_STATE_URI"),
        **_set_env(state_dir="LIVECOSMOS_STATE_DIR"),
    )


def _host_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _mqtt_resource(prod: bool) -> MqttResource:
    """The swarm's broker: Mosquitto on loopback locally, ``IOTSWARM_MQTT_*`` in production.

    ``IOTSWARM_MQTT_SOURCE_ADDRESSES`` is read where the code location loads, so each Celery
    worker host binds its shards' connections to its own local addresses (round robin by shard).
    """
    local_addresses = _host_list("IOTSWARM_MQTT_SOURCE_ADDRESSES")
    if not prod:
        return MqttResource(host="127.0.0.1", port=1883, source_addresses=local_addresses)
    alpn = os.environ.get("IOTSWARM_MQTT_ALPN", "")
    return MqttResource(
        host=dg.EnvVar("IOTSWARM_MQTT_HOST"),
        port=int(os.environ.get("IOTSWARM_MQTT_PORT", "8883")),
        tls=os.environ.get("IOTSWARM_MQTT_TLS", "true").lower() in ("1", "true", "yes"),
        alpn=[a for a in alpn.split(",") if a],
        brokers=_host_list("IOTSWARM_MQTT_BROKERS"),
        source_addresses=local_addresses,
        **_set_env(
            username="IOTSWARM_MQTT_USERNAME",
            password="IOTSWARM_MQTT_PASSWORD",
            password_file="IOTSWARM_MQTT_PASSWORD_FILE",
            ca_file="IOTSWARM_MQTT_CA_FILE",
            cert_file="IOTSWARM_MQTT_CERT_FILE",
            key_file="IOTSWARM_MQTT_KEY_FILE",
        ),
    )
