"""Resources per deployment: embedded defaults for ``local``, environment-driven for ``prod``."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.state_s3 import split_s3_uri
from iotswarm_pipelines.export.stores import EXPORT_PREFIX, Destination, build_stores
from iotswarm_pipelines.swarm.resources import MqttResource


def build_resources() -> dict[str, Any]:
    prod = settings.deployment() == settings.PROD  # fails early on a mistyped deployment name
    return {
        "cosmos": (
            CosmosSource(url=dg.EnvVar("COSMOS_DB_URL"), schema_name=catalogue.SCHEMA)
            if prod
            else CosmosSource(url=settings.sample_db_url())
        ),
        **_export_resources(prod),
        "mqtt": _mqtt_resource(prod),
    }


def _set_env(**names: str) -> dict[str, dg.EnvVar]:
    """EnvVars for the variables that are set; unset ones fall back to boto3's own lookup."""
    return {field: dg.EnvVar(name) for field, name in names.items() if os.environ.get(name)}


def _export_resources(prod: bool) -> dict[str, Any]:
    """State files and object store of the live export (see README, "Export storage")."""
    if not prod:
        return build_stores(
            Destination(
                object_dir=str(settings.data_dir() / "objects"),
                state_dir=str(settings.data_dir() / "state"),
            )
        )
    s3 = S3Resource(
        **_set_env(
            region_name="AWS_REGION",
            endpoint_url="LIVECOSMOS_S3_ENDPOINT_URL",
            aws_access_key_id="AWS_ACCESS_KEY_ID",
            aws_secret_access_key="AWS_SECRET_ACCESS_KEY",
            aws_session_token="AWS_SESSION_TOKEN",
        )
    )
    # State files in LIVECOSMOS_STATE_DIR (or the default folder), or S3 objects at
    # LIVECOSMOS_STATE_URI=s3://bucket/prefix, through the same connection as the payloads.
    state_bucket = state_prefix = None
    if uri := os.environ.get("LIVECOSMOS_STATE_URI", "").strip():
        try:
            state_bucket, state_prefix = split_s3_uri(uri)
        except ValueError as exc:
            raise ValueError(f"LIVECOSMOS_STATE_URI {exc}") from None
    return build_stores(
        Destination(
            s3=s3,
            bucket=dg.EnvVar("LIVECOSMOS_BUCKET"),
            prefix=os.environ.get("LIVECOSMOS_BUCKET_PREFIX", EXPORT_PREFIX),
            state_bucket=state_bucket,
            state_prefix=state_prefix,
            names=("LIVECOSMOS_STATE_DIR", "LIVECOSMOS_STATE_URI"),
            **_set_env(state_dir="LIVECOSMOS_STATE_DIR"),
        )
    )


def _mqtt_resource(prod: bool) -> MqttResource:
    """The swarm's broker: Mosquitto on loopback locally, ``IOTSWARM_MQTT_*`` in production."""
    if not prod:
        return MqttResource(host="127.0.0.1", port=1883)
    alpn = os.environ.get("IOTSWARM_MQTT_ALPN", "")
    return MqttResource(
        host=dg.EnvVar("IOTSWARM_MQTT_HOST"),
        port=int(os.environ.get("IOTSWARM_MQTT_PORT", "8883")),
        tls=os.environ.get("IOTSWARM_MQTT_TLS", "true").lower() in ("1", "true", "yes"),
        alpn=[a for a in alpn.split(",") if a],
        **_set_env(
            username="IOTSWARM_MQTT_USERNAME",
            password="IOTSWARM_MQTT_PASSWORD",
            ca_file="IOTSWARM_MQTT_CA_FILE",
            cert_file="IOTSWARM_MQTT_CERT_FILE",
            key_file="IOTSWARM_MQTT_KEY_FILE",
        ),
    )
