"""How the swarm reaches its broker, checked once before any device starts."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ConfigDict

from iotswarm_pipelines.swarm import options
from iotswarm_pipelines.swarm.mqtt.client import SwarmClient
from iotswarm_pipelines.swarm.mqtt.tls import build_ssl_context
from iotswarm_pipelines.swarm.options import BrokerOptions, SwarmOptions

PROTOCOLS = {"3.1.1": paho.MQTTv311, "5": paho.MQTTv5}
SESSION_EXPIRY_SECONDS = 3600  # MQTT 5 persistent sessions (clean_session=False) outlive a drop


class MqttConfigError(ValueError):
    """The MQTT settings cannot work (bad value, unreadable or invalid certificate file)."""


class BrokerError(RuntimeError):
    """The broker could not be used; the message is one line naming the broker."""


class BrokerUnreachableError(BrokerError):
    """No MQTT broker answered: connection refused, unknown host or timeout."""


class BrokerRefusedError(BrokerError):
    """The broker answered but refused us: credentials, authorisation or TLS handshake."""


RUN_OPTIONS = {"protocol", "qos", "connect_rate", "max_publish_rate", "give_up_after"}
"""The run options the engine takes from ``SwarmOptions`` (the rest of its options are the
broker's)."""


class MqttSettings(BrokerOptions):
    """The broker options and the run's MQTT options, as the engine needs them.

    The broker options are inherited and the run options taken field by field from
    ``SwarmOptions``, so defaults, meanings and limits are declared once, in ``swarm.options``;
    only the reconnect and timeout tuning and the one source address are the engine's own.
    """

    model_config = ConfigDict(frozen=True)

    protocol: str = options.same(SwarmOptions, "protocol")
    qos: int = options.same(SwarmOptions, "qos")
    connect_rate: float = options.same(SwarmOptions, "connect_rate")
    max_publish_rate: float = options.same(SwarmOptions, "max_publish_rate")
    give_up_after: float = options.same(SwarmOptions, "give_up_after")
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    connect_timeout: float = 10.0
    source_address: str | None = None
    """Local address every connection binds to (127.0.0.2, 127.0.0.3, ... on loopback): one
    address reaches one broker address through at most ~28,000 ephemeral ports."""

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            value = getattr(self, name)
            return "'***'" if name == "password" and value else repr(value)

        listed = ", ".join(f"{name}={shown(name)}" for name in type(self).model_fields)
        return f"MqttSettings({listed})"

    __str__ = __repr__

    def validate(self) -> None:  # type: ignore[override]
        """Raise `MqttConfigError` (one line) for settings that cannot work."""
        options.check(self, MqttSettings, error=MqttConfigError)
        if self.password is not None and self.username is None:
            raise MqttConfigError("MQTT password given without a username")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            raise MqttConfigError(
                "MQTT reconnect delays need 0 < reconnect_min_delay <= reconnect_max_delay"
            )
        if self.connect_timeout <= 0:
            raise MqttConfigError("MQTT connect_timeout must be > 0 seconds")
        if self.source_address is not None:
            try:
                options.ip_addresses([self.source_address])
            except ValueError as exc:
                raise MqttConfigError(f"source_address: {exc}") from None
        if not self.tls and (self.ca_file or self.cert_file or self.key_file or self.alpn):
            raise MqttConfigError("MQTT certificate files or ALPN given but tls is off: set tls")
        if self.tls:
            self.ssl_context()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for every connection, built (and its files checked) once."""
        if not self.tls:
            return None
        alpn = tuple(self.alpn)
        key = (self.ca_file, self.cert_file, self.key_file, self.tls_insecure, alpn)
        cached = _CONTEXTS.get(key)
        if cached is None:
            cached = _CONTEXTS[key] = build_ssl_context(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                insecure=self.tls_insecure,
                alpn=alpn,
                error=MqttConfigError,
            )
        return cached

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


_CONTEXTS: dict[tuple, ssl.SSLContext] = {}


def for_shard(
    settings: MqttSettings,
    shard: int,
    brokers: Sequence[str] = (),
    source_addresses: Sequence[str] = (),
) -> MqttSettings:
    """The settings of one shard: brokers and source addresses are taken round robin by shard
    number, so shards spread over a broker cluster and over local addresses (each address
    has its own ~28,000 ephemeral ports, each process its own open-file limit)."""
    changes: dict[str, Any] = {}
    if brokers:
        try:
            host_port = options.host_and_port(brokers[shard % len(brokers)], settings.port)
        except ValueError as exc:
            raise MqttConfigError(str(exc)) from None
        changes["host"], changes["port"] = host_port
    if source_addresses:
        changes["source_address"] = source_addresses[shard % len(source_addresses)]
    return settings.model_copy(update=changes) if changes else settings


def new_client(
    settings: MqttSettings,
    client_id: str,
    *,
    clean: bool | None = None,
    timeout: float | None = None,
    inflight: int = 20,
) -> paho.Client:
    """A paho client configured from the settings; it is not connected yet.

    `inflight` is paho's QoS 1 window (0 = unlimited); its queue is unlimited, as callers keep
    their own bounds.
    """
    protocol = PROTOCOLS[settings.protocol]
    clean_session = settings.clean_session if clean is None else clean
    if protocol == paho.MQTTv5:
        client = SwarmClient(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
    else:
        client = SwarmClient(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=clean_session,
        )
    client.connect_timeout = settings.connect_timeout if timeout is None else timeout
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    context = settings.ssl_context()
    if context is not None:
        client.tls_set_context(context)
        # The context checks the host name itself (unless insecure); paho must not repeat it.
        client.tls_insecure_set(True)
    # connect_async only records the address: the caller's loop calls reconnect().
    bind = settings.source_address or ""
    if protocol == paho.MQTTv5:
        properties = None
        if not clean_session:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        client.connect_async(
            settings.host,
            settings.port,
            settings.keepalive,
            bind_address=bind,
            clean_start=clean_session,
            properties=properties,
        )
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive, bind_address=bind)
    return client


def classify_connect_error(settings: MqttSettings, err: BaseException) -> BrokerError:
    """Turn an exception raised while opening a connection into a one-line broker error."""
    where = f"MQTT broker {settings.address}"
    if isinstance(err, socket.gaierror):
        return BrokerUnreachableError(f"{where}: cannot resolve host name ({err.strerror})")
    if isinstance(err, ssl.SSLCertVerificationError):
        return BrokerRefusedError(
            f"{where}: TLS server certificate rejected ({err.verify_message}); give the broker's "
            "CA with ca_file (tls_insecure=True only for tests)"
        )
    if isinstance(err, ssl.SSLError):
        return BrokerRefusedError(f"{where}: TLS handshake failed ({err.reason or err})")
    if isinstance(err, ConnectionRefusedError):
        return BrokerUnreachableError(f"{where}: connection refused (is the broker running?)")
    if isinstance(err, TimeoutError | socket.timeout):
        return BrokerUnreachableError(
            f"{where}: no answer within {settings.connect_timeout:g}s (wrong host, port or tls?)"
        )
    if isinstance(err, ConnectionError):
        return BrokerRefusedError(f"{where}: connection closed by the broker ({err})")
    if isinstance(err, OSError) and err.errno == errno.EADDRNOTAVAIL and settings.source_address:
        return BrokerUnreachableError(
            f"{where}: cannot connect from source address {settings.source_address} "
            f"({err.strerror}): use an address of this host, or fewer connections per address"
        )
    if isinstance(err, OSError):
        return BrokerUnreachableError(f"{where}: {err.strerror or err}")
    return BrokerUnreachableError(f"{where}: {err}")


def check_broker(settings: MqttSettings, timeout: float = 10, client_id: str | None = None) -> None:
    """One real CONNECT/DISCONNECT: a bad address or credential fails before any device starts.

    ``client_id`` for brokers whose policy admits only known IDs (IoT Core); default a fresh one.
    """
    settings.validate()
    client_id = client_id or f"iotswarm-check-{uuid.uuid4().hex[:12]}"
    client = new_client(settings, client_id, clean=True, timeout=timeout)
    outcome: dict[str, Any] = {}
    last_error: list[str] = []

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        outcome["connack"] = reason_code

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties) -> None:
        outcome.setdefault("disconnect", reason_code)

    def on_log(_client, _userdata, level, buf) -> None:
        if level == paho.MQTT_LOG_ERR:
            last_error.append(buf)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_log = on_log
    where = f"MQTT broker {settings.address}"
    try:
        client.reconnect()
    except Exception as err:
        raise classify_connect_error(settings, err) from None
    deadline = time.monotonic() + timeout
    try:
        while "connack" not in outcome and "disconnect" not in outcome:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnreachableError(
                    f"{where}: no CONNACK within {timeout:g}s (wrong port, or tls mismatch?)"
                )
            client.loop(min(remaining, 0.5))
        reason = outcome.get("connack")
        if reason is None:
            detail = last_error[-1] if last_error else "closed before CONNACK"
            hint = ""
            if settings.tls:
                hint = " (client certificate rejected?)"
                if not settings.alpn:  # AWS IoT Core on 443 closes TLS clients without ALPN
                    hint = (
                        " (client certificate rejected, or the server wants ALPN: AWS IoT Core "
                        "on port 443 needs alpn x-amzn-mqtt-ca)"
                    )
            raise BrokerRefusedError(f"{where}: connection refused{hint}: {detail}")
        if reason.is_failure:
            raise BrokerRefusedError(f"{where}: connection refused: {reason}")
        client.disconnect()
        client.loop(0.1)
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()
