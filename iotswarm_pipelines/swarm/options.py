"""The swarm's options, each declared once: its name, type, default, help and check.

Two typed models hold every option:

- ``SwarmOptions``: the choices of one run (what to send, how often, QoS...). The swarm job's
  Dagster config (``swarm.config.SwarmConfig``) is this model, so the launchpad shows these
  fields with their descriptions and defaults.
- ``BrokerOptions``: where and how devices connect. The ``mqtt`` resource
  (``swarm.resources.MqttResource``) is this model.

Everything else is derived from them: ``check`` runs each option's rule (one line naming the
option), ``add_arguments`` / ``parsed_values`` make the command-line options (``iot-swarm``, and
other command trees that spell the options their own way), and the engine's settings
(``MqttSettings``) take their defaults from ``RUN`` and ``BROKER``.

Adding an option: add one field to the model it belongs to::

    ramp_rate: float = option(0.0, "Devices joining per second; 0 = all at once.",
                              group=SCHEDULE, ge=0)

It then appears in the launchpad, as ``iot-swarm --ramp-rate`` (help shows its default), is
checked before any device starts, and reaches every shard as ``spec.options.ramp_rate``. A
field with ``cli=False`` stays out of command lines (internal plumbing, secrets).

This module is plain data and rules: no Dagster, no MQTT engine, no I/O. It is one piece though
over 400 lines: most of them are the ~70 option declarations, and the few functions that read
them (``check``, ``add_arguments``, ``parsed_values``) are what keep every surface in step.
"""

from __future__ import annotations

import argparse
import enum
import functools
import ipaddress
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.payload_options import DEFAULTS as PAYLOAD_DEFAULTS
from iotswarm_pipelines.payload_options import PayloadOptions

DATA, SCHEDULE, MQTT = "devices and data", "schedule", "MQTT"
SCENARIO = "scenario phases (loop mode: one cycle of sleep_time is one row of the table)"
TLS = "TLS (AWS IoT Core: --port 8883, or 443 with --alpn x-amzn-mqtt-ca)"
METRICS = "live metrics (Prometheus; docs/metrics.md)"
CONTROL = "command and control (Campbell's MQTT API; cr1000x devices, per-device connections)"

COSMOS_SOURCE = "cosmos"


class SwarmConfigError(ValueError):
    """A swarm option, or what it names, cannot work; the message is one line naming it."""


def host_and_port(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6 address]:port` or a bare IPv6 address, as (host, port).

    Raises ValueError with one line when the host is missing or the port is not a port.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"broker {text!r} has no host: write host or host:port")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker {text!r}: port {port!r} is not a number in 1-65535")
    return host, int(port)


def brokers(values: list[str]) -> list[str]:
    """Each value is `host` or `host:port`."""
    for text in values:
        host_and_port(text, 1)
    return values


def ip_addresses(values: list[str]) -> list[str]:
    """Each value is an IP address (of this host, which only connecting can tell)."""
    for text in values:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IP address: give addresses of this host, such as "
                "127.0.0.2 (any 127.x.y.z works on loopback)"
            ) from None
    return values


Mode = Literal["latest", "loop", "replay"]
DeviceType = Literal["cr1000x", "basic"]
Connections = Literal["per_device", "shared"]
Ramp = Literal["none", "linear", "step"]
Protocol = Literal["3.1.1", "5"]
MODES: tuple[str, ...] = get_args(Mode)
DEVICE_TYPES: tuple[str, ...] = get_args(DeviceType)
CONNECTIONS: tuple[str, ...] = get_args(Connections)
RAMPS: tuple[str, ...] = get_args(Ramp)
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

PERCENT = "{name} is a percentage: {ge:g} to {le:g}, got {value:g}"


@dataclass(frozen=True)
class OptionInfo:
    """What the models say about an option beyond its type, default and help.

    ``limits`` are pydantic's own constraints (``ge``, ``gt``, ``le``, ``min_length``) and
    ``choices`` a ``Literal`` type; ``check`` runs them (see ``check``). ``message`` is the
    one-line complaint when the default wording does not fit.
    """

    group: str
    cli: bool = True
    choices: Any = None
    limits: Mapping[str, float] = field(default_factory=dict)
    validator: Callable[[Any], Any] | None = None
    message: str | None = None

    def complaint(self, name: str, value: Any, error: ErrorDetails) -> str:
        """The one line saying what is wrong with ``value`` and what fits."""
        if error["type"] == "value_error":  # a validator's own line
            problem = str(error.get("ctx", {}).get("error", error["msg"]))
            return (self.message or "{name}: {problem}").format(name=name, problem=problem)
        if self.message:
            template = self.message
        elif self.choices is not None:
            template = "{name} {value!r} is unknown: use one of {allowed}"
        elif "le" in self.limits:
            template = "{name} must be from {ge:g} to {le:g}, got {value:g}"
        elif "gt" in self.limits:
            template = "{name} must be greater than {gt:g}, got {value:g}"
        else:
            template = "{name} must be at least {ge:g}, got {value:g}"
        allowed = ", ".join(str(v) for v in get_args(self.choices))
        return template.format(name=name, value=value, allowed=allowed, **self.limits)


def option(
    default: Any,
    help: str,
    *,
    group: str,
    cli: bool = True,
    choices: Any = None,
    validator: Callable[[Any], Any] | None = None,
    message: str | None = None,
    **limits: float,
) -> Any:
    """Declare an option: a pydantic field carrying its command-line group and its limits.

    The limits are pydantic's (``ge=0``, ``le=100``, ``gt=0``, ``min_length=1``) and
    ``choices`` a ``Literal``, applied by ``check`` rather than on construction: Dagster builds
    the launchpad config before the op runs, so a value out of range would fail there as a
    validation traceback instead of the op's one line (and Dagster's config types cannot
    express a ``Literal`` of numbers such as QoS 0 or 1).
    """
    info = OptionInfo(group, cli, choices, limits, validator, message)
    return Field(default=default, description=help, json_schema_extra={"option": cast(Any, info)})


def info(field_info: FieldInfo) -> OptionInfo:
    extra = field_info.json_schema_extra
    assert isinstance(extra, dict), "declare swarm options with option()"
    return cast(OptionInfo, extra["option"])


def same(model: type[BaseModel], name: str) -> Any:
    """Another model's field for the same option: its default, help and limits, not a copy."""
    return model.model_fields[name]


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any] | None:
    """Pydantic's validator of one option's limits, choices and validator; None: any value."""
    if not isinstance(model.model_fields[name].json_schema_extra, dict):
        return None  # not an option (the engine's own tuning)
    meta = info(model.model_fields[name])
    if meta.choices is None and not meta.limits and meta.validator is None:
        return None
    kind = meta.choices or _value_type(model.model_fields[name].annotation)
    extras: list[Any] = [Field(**dict[str, Any](meta.limits))] if meta.limits else []
    if meta.validator is not None:
        extras.append(AfterValidator(meta.validator))
    return TypeAdapter(Annotated[kind, *extras] if extras else kind)


class SwarmOptions(BaseModel):
    """Options of one swarm run; see the README's "MQTT device swarm" section."""

    # A choice of the catalogue's tables in the launchpad rather than free text; command lines
    # take the older spellings (LEVEL_1_...) too and resolve them before they build the model.
    table: catalogue.TableName = option(
        catalogue.TableName(catalogue.SOILMET_30MIN.name), "COSMOS table.", group=DATA
    )
    source: str = option(
        COSMOS_SOURCE,
        "'cosmos' (the cosmos resource) or the path of a CSV export of the table.",
        group=DATA,
    )
    sites: list[str] = option([], "Site IDs; empty = all sites of the table.", group=DATA)
    max_sites: int | None = option(None, "Use only the first N sites.", group=DATA, ge=1)
    devices: int | None = option(None, "Total devices cloned from the sites.", group=DATA)
    per_site: int | None = option(None, "Devices cloned per site.", group=DATA)
    device_id_template: str | None = option(
        None,
        "Device IDs: {site}, {n} (clone number from 1), {i} (index from 0). "
        "Default {site} for one device per site, {site}-{n:05d} for clones.",
        group=DATA,
    )
    mode: str = option("latest", "latest | loop | replay", group=DATA, choices=Mode)
    speed: float = option(48.0, "replay: history seconds per real second.", group=DATA, gt=0)
    history_start: str | None = option(
        None, "loop/replay: start with rows after this ISO time.", group=DATA
    )
    rows_per_message: int = option(1, "loop/replay: rows per message.", group=DATA, ge=1)
    device_type: str = option("cr1000x", "cr1000x | basic", group=DATA, choices=DeviceType)
    prog_name: str = option(
        PAYLOAD_DEFAULTS.prog_name,
        f"cr1000x: {PayloadOptions.model_fields['prog_name'].description}",
        group=DATA,
        min_length=1,
        message="prog_name is empty: e.g. CPU:iotswarm-1.6.10.CR1X",
    )
    strict_json: bool = option(
        PAYLOAD_DEFAULTS.strict_json,
        PayloadOptions.model_fields["strict_json"].description or "",
        group=DATA,
    )
    sleep_time: float = option(60.0, "Seconds between a device's sends.", group=SCHEDULE, ge=0)
    max_cycles: int = option(1, "Sends per device; 0 = until terminated.", group=SCHEDULE, ge=0)
    delay_start: bool = option(
        False, "Delay each device's first send by up to sleep_time.", group=SCHEDULE
    )
    no_send_probability: float = option(
        0.0,
        "Percent of cycles skipped.",
        group=SCHEDULE,
        ge=0,
        le=100,
        message=PERCENT,
    )
    seed: int = option(0, "Seed of delays and skipped cycles.", group=SCHEDULE)
    shards: int = option(1, "Shards, each run by its own step process.", group=SCHEDULE, ge=1)
    swarm_name: str | None = option(
        None, "Names the session (positions saved); default from the run ID.", group=SCHEDULE
    )
    resume_session: bool = option(
        False, "Continue the session named swarm_name where it stopped.", group=SCHEDULE
    )
    sessions_dir: str | None = option(
        None,
        "Session folder or s3://bucket/prefix (sessions and reports); default "
        "$IOTSWARM_SESSIONS_URI, else <IOTSWARM_DATA_DIR>/swarm_sessions.",
        group=SCHEDULE,
    )
    dry: bool = option(False, "Build messages, send nothing.", group=SCHEDULE)
    verify: bool = option(False, "Subscribe and match what arrives.", group=SCHEDULE)
    progress_interval: float = option(5.0, "Seconds between progress logs.", group=SCHEDULE, ge=0.1)
    stop_file: str | None = option(
        None,
        "Shards stop cleanly once this file exists (used by iot-swarm).",
        group=SCHEDULE,
        cli=False,
    )
    qos: int = option(
        1,
        "0 or 1",
        group=MQTT,
        choices=Literal[0, 1],
        message="{name} {value} is not supported: use 0 or 1",
    )
    protocol: str = option("3.1.1", "3.1.1 or 5", group=MQTT, choices=Protocol)
    connections: str = option("per_device", "per_device | shared", group=MQTT, choices=Connections)
    client_id: str | None = option(
        None,
        "Client ID of the one shared connection (connections shared, one shard; the old "
        "iot-swarm's CLIENT_ID). Default iotswarm-shard-<k>-<hash of the device IDs>.",
        group=MQTT,
    )
    mqtt_prefix: str | None = option(None, "Topic levels before the device.", group=MQTT)
    mqtt_suffix: str | None = option(None, "Topic levels after the device.", group=MQTT)
    connect_rate: float = option(
        200.0, "New connections per second; 0 = no limit.", group=MQTT, ge=0
    )
    max_publish_rate: float = option(
        100.0,
        "Publishes per second per connection (IoT Core: 100); 0 = no limit.",
        group=MQTT,
        ge=0,
    )
    give_up_after: float = option(
        300.0,
        "Seconds a shard may go without any broker connection before the run gives up and "
        "fails, counting what it did not send; 0 = never.",
        group=MQTT,
        ge=0,
    )
    outage_share: float = option(
        0.0,
        "Percent of devices whose link goes down (100 = a network-wide outage); 0 = no outage.",
        group=SCENARIO,
        ge=0,
        le=100,
        message=PERCENT,
    )
    outage_start: float = option(
        0.0,
        "Simulated minutes after a device's first row when its link goes down.",
        group=SCENARIO,
        ge=0,
    )
    outage_minutes: float = option(
        0.0,
        "Simulated minutes the link stays down; the rows logged meanwhile are the backlog, "
        "uploaded in order on reconnecting, before live rows.",
        group=SCENARIO,
        ge=0,
    )
    backlog_batch: int = option(
        1,
        "Backlog upload: messages of up to this many rows_per_message messages joined "
        "(1 = one message per row, as live).",
        group=SCENARIO,
        ge=1,
    )
    ramp: str = option(
        "none",
        "How devices join: none (all at once), linear, step.",
        group=SCENARIO,
        choices=Ramp,
    )
    ramp_minutes: float = option(
        0.0, "Simulated minutes over which the devices join.", group=SCENARIO, ge=0
    )
    ramp_steps: int = option(4, "step ramp: number of equal steps.", group=SCENARIO, ge=1)
    metrics_port: int = option(
        0,
        "Serve each shard's metrics on http://<host>:<port>/metrics: the first shard on this "
        "port, each further shard on the next; 0 = off.",
        group=METRICS,
        ge=0,
        le=65535,
        message="metrics_port {value} is out of range 0-65535 (0 = off)",
    )
    pushgateway: str | None = option(
        None,
        "Push each shard's metrics to this Pushgateway (http://host:9091) every "
        "metrics_interval seconds and at the end; default $IOTSWARM_PUSHGATEWAY, else none.",
        group=METRICS,
    )
    metrics_interval: float = option(
        10.0,
        "Seconds between pushes to the Pushgateway.",
        group=METRICS,
        ge=0.5,
        message="metrics_interval must be at least {ge:g} seconds, got {value:g}",
    )
    control: bool = option(
        True,
        "cr1000x devices answer Campbell's MQTT command-and-control API (subscribe to "
        "<group_id>/cc/<device>/#, answer on cr/, state on state/, last will offline). "
        "Needs per_device connections; with shared ones it is off.",
        group=CONTROL,
    )
    group_id: str = option(
        "cs/v2",
        "Campbell groupID: the first topic levels of cc/, cr/ and state/ (mqtt-control's topic).",
        group=CONTROL,
        min_length=1,
        message="group_id is empty: e.g. cs/v2",
    )
    reboot_seconds: float = option(
        5.0,
        "Seconds a restarting device (reboot, program, OS, MQTT config) stays offline.",
        group=CONTROL,
        ge=0,
    )
    control_ignore_share: float = option(
        0.0,
        "Percent of devices that ignore every command.",
        group=CONTROL,
        ge=0,
        le=100,
        message=PERCENT,
    )
    control_late_share: float = option(
        0.0,
        "Percent of devices that answer late (delay log-normal: control_late_median, "
        "control_late_p99).",
        group=CONTROL,
        ge=0,
        le=100,
        message=PERCENT,
    )
    control_late_median: float = option(
        2.0, "Median seconds of a late answer's delay.", group=CONTROL, gt=0
    )
    control_late_p99: float = option(
        10.0, "99th percentile seconds of a late answer's delay.", group=CONTROL, gt=0
    )
    control_download_fail_share: float = option(
        0.0,
        "Percent of devices whose OS/program/mqttConfig downloads always fail.",
        group=CONTROL,
        ge=0,
        le=100,
        message=PERCENT,
    )
    download_timeout: float = option(
        10.0,
        "Seconds a device's HTTP(S) download may take (connect, each read, and in all).",
        group=CONTROL,
        gt=0,
    )


class BrokerOptions(BaseModel):
    """Where and how devices connect; per-run choices (QoS, protocol, rates) are SwarmOptions."""

    host: str = option(
        "127.0.0.1",
        "Broker host name or address.",
        group=MQTT,
        min_length=1,
        message="MQTT host is empty: give the broker's host name or address",
    )
    port: int = option(
        1883,
        "1883 plain, 8883 TLS, 443 TLS with ALPN.",
        group=MQTT,
        ge=1,
        le=65535,
        message="MQTT port {value} is out of range 1-65535",
    )
    username: str | None = option(None, "Username, if the broker wants one.", group=MQTT)
    password: str | None = option(
        None, "Set it with dg.EnvVar, never inline.", group=MQTT, cli=False
    )
    keepalive: int = option(
        60,
        "MQTT keep-alive seconds.",
        group=MQTT,
        ge=5,
        message="MQTT keepalive {value}s is too short: use >= 5",
    )
    clean_session: bool = option(True, "Clean session / clean start.", group=MQTT)
    brokers: list[str] = option(
        [],
        "Brokers as host or host:port (port default: port), taken round robin by shard: a "
        "cluster's nodes, or several brokers for more connections; empty = host.",
        group=MQTT,
        validator=brokers,
    )
    source_addresses: list[str] = option(
        [],
        "Local addresses the shards connect from, round robin by shard (on loopback "
        "127.0.0.2, 127.0.0.3, ... work as they are): one address reaches one broker through "
        "about 28,000 ports.",
        group=MQTT,
        validator=ip_addresses,
    )
    tls: bool = option(False, "Connect with TLS (implied by the files and ALPN).", group=TLS)
    ca_file: str | None = option(None, "CA bundle (PEM) to trust.", group=TLS)
    cert_file: str | None = option(None, "Client certificate (mutual TLS).", group=TLS)
    key_file: str | None = option(None, "Client private key (mutual TLS).", group=TLS)
    alpn: list[str] = option([], "ALPN, e.g. x-amzn-mqtt-ca on port 443.", group=TLS)
    tls_insecure: bool = option(
        False, "Skip certificate and host checks (test brokers only).", group=TLS
    )


CONTROL_OPTIONS = tuple(n for n, f in SwarmOptions.model_fields.items() if info(f).group == CONTROL)
"""The command-and-control options, for command trees that pick options by name."""

RUN = SwarmOptions()
"""Every run option at its default: the engine's defaults come from here."""
BROKER = BrokerOptions()
"""Every broker option at its default."""


def problem(model: type[BaseModel], name: str, value: Any) -> str | None:
    """The one-line complaint about one option's value, or None when it fits (None always fits)."""
    adapter = _adapter(model, name)
    if value is None or adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return info(model.model_fields[name]).complaint(name, value, exc.errors()[0])
    return None


def check(
    values: object,
    model: type[BaseModel],
    names: Iterable[str] | None = None,
    error: type[Exception] = SwarmConfigError,
) -> None:
    """Raise ``error`` with one line for the first option of ``model`` that does not fit.

    ``values`` is anything with the options as attributes (a model, a settings object);
    ``names`` limits the check to some options.
    """
    for name in model.model_fields if names is None else names:
        complaint = problem(model, name, getattr(values, name))
        if complaint:
            raise error(complaint)


# Command lines. Each option becomes --kebab-name in its group; a command tree that spells the
# options differently (the old iot-swarm's --endpoint, a positional TABLE) says so with Arg.

_UNSET: Any = object()


@dataclass(frozen=True)
class Arg:
    """How one command line spells an option, where it differs from the model.

    ``flags`` replace ``--kebab-name`` (a name without dashes makes a positional argument);
    ``default`` and ``help`` replace the model's; ``kwargs`` go to ``add_argument`` as they are
    (``nargs``, ``required``, ``metavar``...).
    """

    flags: tuple[str, ...] = ()
    default: Any = _UNSET
    help: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def _value_type(annotation: Any) -> Any:
    """The value type behind ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _kind(annotation: Any) -> Any:
    """The value type behind ``X | None`` (and ``list`` for lists)."""
    annotation = _value_type(annotation)
    return get_origin(annotation) or annotation


def _cli_spelling(value: Any) -> Any:
    return value.replace("_", "-") if isinstance(value, str) else value


def _shown_default(default: Any) -> str:
    if default is None or default is False or default == []:
        return ""
    return f" (default: {default})".replace("%", "%%")


def group(parser: argparse.ArgumentParser, title: str) -> Any:
    """The parser's argument group of that title, made on first use."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def add_arguments(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
    args: Mapping[str, Arg] | None = None,
) -> None:
    """Add the model's options (those with ``cli``) to ``parser``, each in its group.

    Types, choices, defaults and help come from the model; help shows each default. Choice
    values are spelled with dashes (``per-device``), underscores are accepted too. List options
    repeat and take comma-separated values. ``args`` renames or re-defaults single options;
    ``parsed_values`` turns the parsed namespace back into the model's values.
    """
    for name, field_info in model.model_fields.items():
        meta = info(field_info)
        if (only is not None and name not in only) or name in skip or not meta.cli:
            continue
        arg = (args or {}).get(name, Arg())
        default = field_info.default if arg.default is _UNSET else arg.default
        help = (arg.help or field_info.description or "").replace("%", "%%")
        kind = _kind(field_info.annotation)
        kwargs: dict[str, Any] = {"default": default}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
            help += " (default: on)" if default else ""
        elif kind is list:
            kwargs.update(action="append", default=None)
            help += " (comma-separated, repeatable)"
        else:
            kwargs["type"] = str if issubclass(kind, enum.Enum) else kind
            if meta.choices is not None:
                kwargs["choices"] = [_cli_spelling(v) for v in get_args(meta.choices)]
                if kind is str:
                    kwargs["type"] = _cli_spelling
                default = _cli_spelling(default)
            help += _shown_default(default)
        flags = arg.flags or ("--" + name.replace("_", "-"),)
        if flags[0].startswith("-"):
            kwargs["dest"] = name
        elif flags[0] != name:
            kwargs["metavar"] = flags[0]
            flags = (name,)
        group(parser, meta.group).add_argument(*flags, help=help, **{**kwargs, **dict(arg.kwargs)})


def parsed_values(namespace: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The model's options given on the command line, spelled as the model spells them.

    Options left out (or ``None``) are left out, so the model's defaults apply to them.
    """
    values: dict[str, Any] = {}
    for name, field_info in model.model_fields.items():
        value = getattr(namespace, name, None)
        if value is None:
            continue
        choices = get_args(info(field_info).choices)
        if isinstance(value, list):
            value = [part.strip() for v in value for part in v.split(",") if part.strip()]
        elif choices and isinstance(value, str):
            value = next((v for v in choices if _cli_spelling(v) == value), value)
        values[name] = value
    return values
