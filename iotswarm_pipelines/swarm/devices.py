"""Which devices a swarm has, what they are called, where they publish, and which shard runs them.

Pure rules with no I/O: a swarm either mirrors the network (one device per site, named after
the site, as the old swarm did) or clones the sites to reach loads far beyond the 51 real ones.
Names and topics are checked here against AWS IoT Core's limits (client IDs up to 128 bytes,
topics up to 256 bytes and 7 slashes), so a bad template fails before any device connects.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from iotswarm_pipelines.swarm.iot_core import (
    MAX_CLIENT_ID_BYTES,
    MAX_TOPIC_BYTES,
    MAX_TOPIC_SLASHES,
)
from iotswarm_pipelines.swarm.options import SwarmConfigError

SITE_TEMPLATE = "{site}"
CLONE_TEMPLATE = "{site}-{n:05d}"
TEMPLATE_FIELDS = {
    "site": "the site ID, e.g. ALIC1",
    "n": "the clone number within its site, from 1",
    "i": "the device's position in the whole swarm, from 0",
}


@dataclass(frozen=True)
class DevicePlan:
    device_id: str
    site_id: str
    topic: str


def _check_template(template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SwarmConfigError(f"device_id_template {template!r} is malformed: {exc}") from None
    known = ", ".join(f"{{{k}}} ({v})" for k, v in TEMPLATE_FIELDS.items())
    for field in fields:
        if field not in TEMPLATE_FIELDS:
            raise SwarmConfigError(
                f"device_id_template {template!r} uses unknown placeholder {{{field}}}: "
                f"use only {known}"
            )
    try:
        template.format(site="ALIC1", n=1, i=0)
    except (ValueError, TypeError) as exc:
        raise SwarmConfigError(
            f"device_id_template {template!r} cannot be formatted: {exc} ({{n}} and {{i}} are "
            "integers, {site} is a string)"
        ) from None


def check_device_id(device_id: str) -> None:
    """A device ID is an MQTT client ID and one topic level, so it must be valid as both."""
    if not device_id:
        raise SwarmConfigError("a device ID is empty: fix device_id_template")
    if len(device_id.encode()) > MAX_CLIENT_ID_BYTES:
        raise SwarmConfigError(
            f"device ID {device_id!r} is longer than {MAX_CLIENT_ID_BYTES} bytes "
            "(the AWS IoT Core client ID limit): shorten device_id_template"
        )
    if device_id.startswith("$"):
        raise SwarmConfigError(
            f"device ID {device_id!r} starts with '$', which brokers reserve: "
            "change device_id_template"
        )
    bad = sorted({c for c in device_id if c in "/+#" or not c.isprintable() or c.isspace()})
    if bad:
        raise SwarmConfigError(
            f"device ID {device_id!r} contains {''.join(bad)!r}: device IDs are also topic "
            "levels, so they cannot hold '/', '+', '#', spaces or control characters"
        )


def _check_topic_part(name: str, value: str) -> None:
    levels = value.split("/")
    if any(level == "" for level in levels):
        raise SwarmConfigError(
            f"{name} {value!r} has an empty topic level (a leading, trailing or double '/'): "
            "remove the extra '/'"
        )
    if any(c in value for c in "+#\0"):
        raise SwarmConfigError(
            f"{name} {value!r} contains a wildcard or NUL: publish topics cannot hold '+' or '#'"
        )
    if name == "mqtt_prefix" and value.startswith("$"):
        raise SwarmConfigError(
            f"mqtt_prefix {value!r} starts with '$', which brokers reserve for system topics"
        )


def make_topic(device_id: str, prefix: str | None = None, suffix: str | None = None) -> str:
    """``{prefix}/{device_id}/{suffix}``; empty or missing prefix/suffix are left out."""
    for name, value in (("mqtt_prefix", prefix), ("mqtt_suffix", suffix)):
        if value:
            _check_topic_part(name, value)
    parts = [p for p in (prefix, device_id, suffix) if p]
    topic = "/".join(parts)
    if topic.count("/") > MAX_TOPIC_SLASHES:
        raise SwarmConfigError(
            f"topic {topic!r} has {topic.count('/')} slashes; AWS IoT Core allows "
            f"{MAX_TOPIC_SLASHES}: shorten mqtt_prefix or mqtt_suffix"
        )
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise SwarmConfigError(
            f"topic {topic[:60]!r}... is longer than {MAX_TOPIC_BYTES} bytes: shorten "
            "mqtt_prefix, mqtt_suffix or device_id_template"
        )
    return topic


def clone_counts(sites: Sequence[str], devices: int | None, per_site: int | None) -> list[int]:
    """Devices per site: ``per_site`` each, or ``devices`` spread as evenly as possible."""
    if devices is not None and per_site is not None:
        raise SwarmConfigError("set either devices (a total) or per_site, not both")
    if not sites:
        raise SwarmConfigError("the swarm has no sites: check sites / max_sites and the source")
    if per_site is not None:
        if per_site < 1:
            raise SwarmConfigError(f"per_site must be at least 1, got {per_site}")
        return [per_site] * len(sites)
    if devices is None:
        return [1] * len(sites)
    if devices < 1:
        raise SwarmConfigError(f"devices must be at least 1, got {devices}")
    base, extra = divmod(devices, len(sites))
    return [base + (1 if k < extra else 0) for k in range(len(sites))]


def plan_devices(
    sites: Sequence[str],
    *,
    devices: int | None = None,
    per_site: int | None = None,
    template: str | None = None,
    prefix: str | None = None,
    suffix: str | None = None,
) -> list[DevicePlan]:
    """The swarm's devices, grouped by site (so a shard holds few sites and shares their data).

    Without ``devices``/``per_site`` there is one device per site, named after the site;
    otherwise the template defaults to ``{site}-{n:05d}``.
    """
    counts = clone_counts(sites, devices, per_site)
    if template is None:
        template = SITE_TEMPLATE if devices is None and per_site is None else CLONE_TEMPLATE
    _check_template(template)
    planned: list[DevicePlan] = []
    seen: dict[str, str] = {}
    for site, count in zip(sites, counts, strict=True):
        for n in range(1, count + 1):
            device_id = template.format(site=site, n=n, i=len(planned))
            check_device_id(device_id)
            if device_id in seen:
                raise SwarmConfigError(
                    f"device_id_template {template!r} gives {device_id!r} twice: add {{n}} or "
                    "{i} so that every clone gets its own ID"
                )
            seen[device_id] = site
            planned.append(DevicePlan(device_id, site, make_topic(device_id, prefix, suffix)))
    return planned


def split_shards(devices: Sequence[DevicePlan], shards: int) -> list[list[DevicePlan]]:
    """Contiguous, balanced shards (sizes differ by at most one); never an empty shard.

    Contiguous keeps a site's clones together, so each shard queries and caches few sites.
    """
    if shards < 1:
        raise SwarmConfigError(f"shards must be at least 1, got {shards}")
    count = min(shards, len(devices))
    base, extra = divmod(len(devices), count) if count else (0, 0)
    result, start = [], 0
    for k in range(count):
        size = base + (1 if k < extra else 0)
        result.append(list(devices[start : start + size]))
        start += size
    return result
