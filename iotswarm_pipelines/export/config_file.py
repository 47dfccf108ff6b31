"""``live-cosmos``'s config file, in either format the old tools' users have.

Flat ``key='value'`` files (``dsn``, ``user``, ``pass`` and a bucket) and NERC-CEH/iot-swarm's
nested files (``oracle: {…}``, ``aws: {…}``, ``iot_core: {…}``) work unchanged and mean the
same (``config_formats``); the optional keys choose a SQLAlchemy URL instead, a local folder
instead of S3, where the state files live (``state_dir``) or that the state is kept as objects
in the bucket (``state_prefix``), the export's knobs and the payload text's. The IoT Core keys
are accepted for the swarm and ignored here. Errors name the file and line (or nested key) but
never echo a value, because a line may hold the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from iotswarm_pipelines.config_formats import (
    ConfigFileError,
    Setting,
    oracle_url,
    parse_bool,
    read_settings,
)
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.file_options import KEYS, check_fallback_hours, clean_sites
from iotswarm_pipelines.metrics.exposition import MetricsError, check_pushgateway

__all__ = ["KEYS", "ConfigFileError", "LiveCosmosConfig", "parse_config"]


@dataclass(frozen=True)
class LiveCosmosConfig:
    path: Path
    url: str  # holds the password: never print it (see ``safe_url``)
    schema_name: str | None
    bucket: str | None
    bucket_prefix: str
    endpoint_url: str | None
    object_dir: str | None
    state_dir: str | None
    state_prefix: str | None  # S3 state objects in ``bucket`` under this prefix
    fallback_hours: float | None
    batch_size: int | None
    sites: list[str] | None
    prog_name: str | None
    strict_json: bool | None
    pushgateway: str | None = None  # where each run pushes its metrics (docs/metrics.md)

    def __repr__(self) -> str:  # dataclass's repr would show the URL with its password
        return f"LiveCosmosConfig(path={str(self.path)!r}, url={self.safe_url!r}, ...)"

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)


def parse_config(path: str | Path) -> LiveCosmosConfig:
    path = Path(path)
    settings: dict[str, Setting] = read_settings(path, KEYS)
    values = {key: setting.value for key, setting in settings.items()}

    def fail(key: str, message: str) -> ConfigFileError:
        where = f", {settings[key].where}" if key in settings else ""
        return ConfigFileError(f"{path}{where}: {message}")

    login = [k for k in ("dsn", "user", "pass") if k in values]
    if "url" in values and login:
        raise fail("url", "give either url or dsn/user/pass, not both")
    if "url" in values:
        url = values["url"]
    elif len(login) == 3:
        url = oracle_url(values["dsn"], values["user"], values["pass"])
    else:
        missing = [k for k in ("dsn", "user", "pass") if k not in values]
        raise ConfigFileError(
            f"{path}: missing {', '.join(missing)}; give dsn='…', user='…' and pass='…' "
            "(Oracle; nested: oracle: { dsn: … user: … password: … }) or url='…' (any "
            "SQLAlchemy URL)"
        )
    if ("bucket" in values) == ("object_dir" in values):
        raise ConfigFileError(
            f"{path}: give exactly one destination: bucket='…' (S3; nested: aws: {{ bucket: … }}) "
            "or object_dir='…' (a folder)"
        )
    if "state_prefix" in values and "state_dir" in values:
        raise fail("state_prefix", "give state_dir='…' (files) or state_prefix='…' (S3), not both")
    if "state_prefix" in values and "bucket" not in values:
        raise fail("state_prefix", "state_prefix keeps the state in the bucket: give bucket='…'")
    fallback_hours = batch_size = None
    if "fallback_hours" in values:
        try:
            fallback_hours = float(values["fallback_hours"])
            check_fallback_hours(fallback_hours)
        except ValueError:
            raise fail(
                "fallback_hours",
                "fallback_hours must be a number of hours, 0 or more (1000000 means every row)",
            ) from None
    if "batch_size" in values:
        if not values["batch_size"].isdigit() or int(values["batch_size"]) < 1:
            raise fail("batch_size", "batch_size must be a whole number of rows, 1 or more")
        batch_size = int(values["batch_size"])
    sites = None
    if "sites" in values:
        # Matched against the source's IDs (``export.sites``) before any run, not upper-cased.
        sites = clean_sites(values["sites"].split(","))
        if not sites:
            raise fail("sites", "sites is empty; list site IDs like sites='ALIC1,BALRD'")
    strict_json = None
    if "strict_json" in settings:
        strict_json = parse_bool(path, "strict_json", settings["strict_json"])
    if "prog_name" in values and not values["prog_name"]:
        raise fail("prog_name", "prog_name is empty; e.g. prog_name='CPU:iotswarm-1.6.10.CR1X'")
    endpoint_url = values.get("endpoint_url")
    if endpoint_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint_url):
        raise fail("endpoint_url", "endpoint_url must be an http:// or https:// URL")
    pushgateway = values.get("pushgateway")
    if pushgateway is not None:
        try:
            check_pushgateway(pushgateway)
        except MetricsError:
            raise fail("pushgateway", "pushgateway must be http://host:9091 or host:9091") from None
    try:
        backend = _backend(url)
    except ValueError:
        raise fail("url" if "url" in values else "dsn", "not a valid database URL/DSN") from None
    return LiveCosmosConfig(
        path=path,
        url=url,
        schema_name=catalogue.SCHEMA if backend == "oracle" else None,
        bucket=values.get("bucket"),
        bucket_prefix=values.get("bucket_prefix", ""),
        endpoint_url=endpoint_url,
        object_dir=values.get("object_dir"),
        state_dir=values.get("state_dir"),
        state_prefix=values.get("state_prefix"),
        fallback_hours=fallback_hours,
        batch_size=batch_size,
        sites=sites,
        prog_name=values.get("prog_name"),
        strict_json=strict_json,
        pushgateway=pushgateway,
    )


def _backend(url: str) -> str:
    try:
        return sa.engine.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as exc:
        raise ValueError(str(exc)) from None
