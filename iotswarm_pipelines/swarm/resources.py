"""The broker the swarm publishes to, as a Dagster resource; the MQTT engine takes its settings."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings


class MqttResource(dg.ConfigurableResource):
    """Where and how devices connect; per-run choices (QoS, protocol, rates) come from the job."""

    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, description="1883 plain, 8883 TLS, 443 TLS with ALPN.")
    username: str | None = Field(default=None, description="Username, if the broker wants one.")
    password: str | None = Field(default=None, description="Set it with dg.EnvVar, never inline.")
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: str | None = Field(default=None, description="CA bundle (PEM) to trust.")
    cert_file: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(default=None, description="Client private key (mutual TLS).")
    alpn: list[str] = Field(default=[], description="ALPN, e.g. x-amzn-mqtt-ca on port 443.")
    tls_insecure: bool = Field(
        default=False, description="Skip certificate and host checks (test brokers only)."
    )
    keepalive: int = Field(default=60, description="MQTT keep-alive seconds.")
    clean_session: bool = Field(default=True, description="Clean session / clean start.")

    def settings(
        self,
        *,
        qos: int = 1,
        protocol: str = "3.1.1",
        connect_rate: float = 200.0,
        max_publish_rate: float = 100.0,
    ) -> MqttSettings:
        return MqttSettings(
            host=self.host,
            port=self.port,
            protocol=protocol,  # type: ignore[arg-type]
            qos=qos,
            keepalive=self.keepalive,
            clean_session=self.clean_session,
            username=self.username or None,
            password=self.password or None,
            tls=self.tls or bool(self.ca_file or self.cert_file or self.alpn),
            ca_file=self.ca_file or None,
            cert_file=self.cert_file or None,
            key_file=self.key_file or None,
            tls_insecure=self.tls_insecure,
            alpn=tuple(self.alpn),
            connect_rate=connect_rate,
            max_publish_rate=max_publish_rate,
        )
