"""The broker the swarm publishes to, as a Dagster resource; the MQTT engine takes its settings."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from iotswarm_pipelines.secret_files import read_secret
from iotswarm_pipelines.swarm.mqtt.settings import RUN_OPTIONS, MqttSettings, for_shard
from iotswarm_pipelines.swarm.options import RUN, BrokerOptions, SwarmOptions


class MqttResource(dg.ConfigurableResource, BrokerOptions):
    """Where and how devices connect; per-run choices (QoS, protocol, rates) come from the job."""

    password_file: str = Field(
        default="",
        description="A file holding the password (read once per shard), instead of `password`: "
        "iot-swarm hands its password over this way, never by a shard's environment.",
    )

    def _password(self) -> str | None:
        if self.password:
            return self.password
        return read_secret(self.password_file, "MQTT password") if self.password_file else None

    def settings(self, run: SwarmOptions = RUN, shard: int = 0) -> MqttSettings:
        """The engine's settings for one shard: its broker and source address (round robin
        over `brokers` and `source_addresses`), with the run's QoS, protocol and rates."""
        settings = MqttSettings(
            **self.model_dump(include=set(BrokerOptions.model_fields)),
            **run.model_dump(include=RUN_OPTIONS),
        ).model_copy(
            update={  # Dagster config spells "none" as empty; TLS files or ALPN imply TLS
                "username": self.username or None,
                "password": self._password(),
                "tls": self.tls or bool(self.ca_file or self.cert_file or self.alpn),
                "ca_file": self.ca_file or None,
                "cert_file": self.cert_file or None,
                "key_file": self.key_file or None,
            }
        )
        return for_shard(settings, shard, self.brokers, self.source_addresses)
