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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from iotswarm_pipelines.config_formats import (
    ConfigFileError,
    Setting,
    oracle_url,
    parse_bool,
    read_settings,
)
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.file_options import KEYS, ExportOptions, clean_sites, option_kind

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
    options: Mapping[str, Any] = field(default_factory=dict)
    """The export options the file sets (``ExportOptions``' fields), read and checked; a
    command line's go over them, and what neither sets keeps the model's default."""

    def __repr__(self) -> str:  # dataclass's repr would show the URL with its password
        return f"LiveCosmosConfig(path={str(self.path)!r}, url={self.safe_url!r}, ...)"

    @property
    def export_options(self) -> ExportOptions:
        """The file's export options over the model's defaults."""
        return ExportOptions(**self.options)

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
    options = {}
    for name in ExportOptions.model_fields:
        if name in settings:
            try:
                options[name] = _option_value(path, name, settings[name])
            except ConfigFileError:  # a bool's own line
                raise
            except ValueError:
                raise fail(name, _how_to_write(name)) from None
    endpoint_url = values.get("endpoint_url")
    if endpoint_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint_url):
        raise fail("endpoint_url", "endpoint_url must be an http:// or https:// URL")
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
        options=options,
    )


_HOW_TO_WRITE = {
    "fallback_hours": (
        "fallback_hours must be a number of hours, 0 or more (1000000 means every row)"
    ),
    "batch_size": "batch_size must be a whole number of rows, 1 or more",
    "sites": "sites is empty; list site IDs like sites='ALIC1,BALRD'",
    "prog_name": "prog_name is empty; e.g. prog_name='CPU:iotswarm-1.6.10.CR1X'",
    "pushgateway": "pushgateway must be http://host:9091 or host:9091",
}
"""What a wrong value of an export option should look like; the line never echoes the value."""


def _how_to_write(name: str) -> str:
    return _HOW_TO_WRITE.get(name, f"{name} is not valid: see docs/live-export.md's options")


def _option_value(path: Path, name: str, setting: Setting) -> Any:
    """One export option's value from the file's text, by its type in ``ExportOptions``, then
    checked by the model's rules. Raises ``ValueError`` when it does not fit.

    Text is never empty; a list is comma-separated, trimmed, each ID kept once (the sites are
    matched against the source's IDs by ``export.sites`` before any run, not upper-cased); a
    whole number is digits only.
    """
    kind, text = option_kind(name), setting.value
    if kind is bool:
        return parse_bool(path, name, setting)
    if kind is list:
        value: Any = clean_sites(text.split(","))
    elif kind is int:
        value = int(text) if text.isdigit() else None
    else:
        value = kind(text)
    if value is None or value == "" or value == []:
        raise ValueError(name)
    ExportOptions(**{name: value}).check_options()  # ValueError (MetricsError is one)
    return value


def _backend(url: str) -> str:
    try:
        return sa.engine.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as exc:
        raise ValueError(str(exc)) from None
