"""Both config file formats the old tool's users have, read into one flat set of settings.

- Flat, one ``key='value'`` per line (the first live-COSMOS uploader's format).
- Nested blocks in the format of the ``config`` library on PyPI, which NERC-CEH/iot-swarm reads
  (``oracle: { dsn: "…" user: "…" password: "…" }``, ``aws: { bucket: … }``,
  ``iot_core: { endpoint: … }``). They are read with that same library, so its syntax (quotes,
  commas or newlines, numbers, comments) is exactly what the old tool accepted.

Both end as ``{flat key: Setting}``, so ``live-cosmos`` and ``iot-swarm`` check one set of
keys whatever the format. Errors name the file and the line or key, never the value: a line may
hold a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import config as config_library

from iotswarm_pipelines.secret_files import warn_if_open

NESTED_BLOCKS: dict[str, dict[str, str]] = {
    "oracle": {"dsn": "dsn", "user": "user", "password": "pass"},
    "aws": {"bucket": "bucket", "bucket_prefix": "bucket_prefix", "endpoint_url": "endpoint_url"},
    "iot_core": {
        "endpoint": "endpoint",
        "port": "port",
        "cert_path": "cert_path",
        "key_path": "key_path",
        "pri_key_path": "key_path",
        "ca_cert_path": "ca_cert_path",
        "aws_ca_cert_path": "ca_cert_path",
    },
}
"""Block -> {key in the block: flat key}; ``pri_key_path`` and ``aws_ca_cert_path`` are the
spellings of the old tool's documented example, ``key_path``/``ca_cert_path`` of its code."""

IOT_CORE_KEYS = ("endpoint", "port", "cert_path", "key_path", "ca_cert_path")

_FLAT_LINE = re.compile(
    r"""^\s*(?P<key>\w+)\s*=\s*"""
    r"""(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<bare>[^'"\s#]+))\s*(?:\#.*)?$"""
)
_NESTED_LINE = re.compile(r"^\s*\w+\s*(:|[:=]?\s*\{)", re.MULTILINE)


class ConfigFileError(ValueError):
    """The config file cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class Setting:
    value: str  # as text, whatever the format: both formats then share one set of checks
    where: str  # "line 3" or "key oracle.user", for error messages


def oracle_url(dsn: str, user: str, password: str) -> str:
    """``oracle+oracledb://user:pass@dsn``, user and password URL-quoted (``@``, ``/`` ...)."""
    return f"oracle+oracledb://{quote(user, safe='')}:{quote(password, safe='')}@{dsn}"


def read_settings(path: Path, keys: Iterable[str]) -> dict[str, Setting]:
    """The file's settings by flat key; a key outside ``keys`` is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    known = tuple(keys)
    settings = _read_nested(path, known) if is_nested(text) else _read_flat(path, text, known)
    if _holds_password(settings):
        warn_if_open(path)
    return settings


def _holds_password(settings: dict[str, Setting]) -> bool:
    if settings.get("pass", Setting("", "")).value:
        return True
    url = settings.get("url")
    return url is not None and re.match(r"^[\w+.-]+://[^/@]*:[^/@]+@", url.value) is not None


def is_nested(text: str) -> bool:
    """A ``name: …`` line or a ``name {`` block (outside comments) is the nested format; the
    flat format writes ``name=…`` only."""
    uncommented = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return _NESTED_LINE.search(uncommented) is not None


def _read_flat(path: Path, text: str, keys: tuple[str, ...]) -> dict[str, Setting]:
    settings: dict[str, Setting] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _FLAT_LINE.match(line)
        if match is None:
            raise ConfigFileError(
                f"{path}, line {number}: not a key='value' line; write one setting per line, "
                "e.g. bucket='my-bucket'"
            )
        key = match["key"].lower()
        _check_known(path, f"line {number}", match["key"], key, keys)
        if key in settings:
            raise ConfigFileError(
                f"{path}, line {number}: {key} is set twice (first on {settings[key].where})"
            )
        value = next(v for v in (match["sq"], match["dq"], match["bare"]) if v is not None)
        settings[key] = Setting(value.strip(), f"line {number}")
    return settings


def _read_nested(path: Path, keys: tuple[str, ...]) -> dict[str, Setting]:
    try:
        tree = config_library.Config(str(path)).as_dict()
    except (
        config_library.ConfigError,
        config_library.ConfigFormatError,
        config_library.RecognizerError,  # the tokenizer's: an unterminated string
    ) as exc:
        position = re.search(r"\((\d+), (\d+)\)", str(exc))
        at = f", line {position[1]}" if position else ""
        raise ConfigFileError(
            f"{path}{at}: not a valid nested config file; write blocks like "
            'oracle: { dsn: "…" user: "…" password: "…" }'
        ) from None
    settings: dict[str, Setting] = {}
    for name, value in tree.items():
        if isinstance(value, dict) and name in NESTED_BLOCKS:
            aliases = NESTED_BLOCKS[name]
            for inner, inner_value in value.items():
                where = f"key {name}.{inner}"
                if inner not in aliases:
                    raise ConfigFileError(
                        f"{path}, {where}: unknown key {inner!r} in block {name}; known keys are "
                        f"{', '.join(aliases)}"
                    )
                _put(path, settings, aliases[inner], inner_value, where)
        else:
            # The flat format's keys may also stand at the top level (state_dir: "…").
            _check_known(path, f"key {name}", name, name.lower(), keys)
            _put(path, settings, name.lower(), value, f"key {name}")
    return settings


def _check_known(path: Path, where: str, written: str, key: str, keys: tuple[str, ...]) -> None:
    if key not in keys:
        blocks = ", ".join(f"{b}: {{…}}" for b in NESTED_BLOCKS)
        raise ConfigFileError(
            f"{path}, {where}: unknown key {written!r}; known keys are {', '.join(keys)} "
            f"(nested files: the blocks {blocks})"
        )


def _put(path: Path, settings: dict[str, Setting], key: str, value: object, where: str) -> None:
    if key in settings:
        raise ConfigFileError(
            f"{path}, {where}: {key} is set twice (also as {settings[key].where}); keep one"
        )
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigFileError(f"{path}, {where}: must be a single value (text or a number)")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    settings[key] = Setting(text.strip(), where)


def parse_bool(path: Path, key: str, setting: Setting) -> bool:
    """``true/false``, ``yes/no``, ``1/0`` in either format."""
    value = setting.value.lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise ConfigFileError(f"{path}, {setting.where}: {key} must be true or false")
