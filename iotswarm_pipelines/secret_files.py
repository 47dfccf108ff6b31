"""Secrets kept out of environments and command lines, and files that hold them kept private.

A child process inherits its parent's environment, and any process of the same user can read it
in ``/proc/<pid>/environ`` for the child's whole life. So ``iot-swarm`` takes the broker's
password and a source URL that holds a password out of its own environment, writes each to a
file only its user can read, in a folder only its user can enter, and hands its shards the
file's path in the run config; each shard reads the file once, when it builds its resources, and
the command removes the folder when the run ends. The resources read ``*_file`` settings too,
so Celery workers and pods can be given files (mounted secrets) instead of variables.

Like ssh with a private key, a config or password file that holds a password and that group
or others can read gets a warning naming the file and the ``chmod`` that fixes it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


class SecretFileError(ValueError):
    """A secret file named in the config cannot be read; the message names it, never its text."""


def read_secret(path: str | Path, what: str) -> str:
    """The secret in ``path``, without the trailing newline an editor adds."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise SecretFileError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def too_open(path: str | Path) -> str | None:
    """A one-line warning when group or others may read ``path``; None when it is private."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None  # the reader reports a missing file in its own words
    if not mode & OPEN_BITS:
        return None
    return (
        f"{path} holds a password and is readable by others (mode {mode:04o}); "
        f"make it private: chmod 600 {path}"
    )


def warn_if_open(path: str | Path) -> None:
    """The warning on stderr: a JSON line when the command logs JSON (``--log-format json``)."""
    if warning := too_open(path):
        if os.environ.get("IOTSWARM_LOG_FORMAT", "").strip().lower() == "json":
            logging.getLogger("iotswarm.security").warning(warning)
            return
        prog = Path(sys.argv[0]).name.removesuffix(".py") or "iotswarm"
        print(f"{prog}: warning: {warning}", file=sys.stderr)


class Handoff:
    """A private folder of secret files for this process's children, removed when it ends."""

    def __init__(self) -> None:
        self._folder: Path | None = None

    def put(self, name: str, secret: str) -> str:
        """Write ``secret`` to a private file; returns its path for a ``*_file`` setting."""
        if self._folder is None:
            runtime = os.environ.get("XDG_RUNTIME_DIR")  # a per-user tmpfs where there is one
            base = runtime if runtime and os.path.isdir(runtime) else None
            self._folder = Path(tempfile.mkdtemp(prefix="iotswarm-secrets-", dir=base))  # 0700
            atexit.register(self.remove)
        path = self._folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        return str(path)

    def remove(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


handoff = Handoff()
"""The process's one hand-over folder: ``iot-swarm`` removes it when its run ends."""


SWARM_PASSWORD_ENV = "IOTSWARM_MQTT_PASSWORD"
SWARM_SOURCE_URL_ENV = "IOTSWARM_SOURCE_URL"
SWARM_SECRETS = (SWARM_PASSWORD_ENV, SWARM_SOURCE_URL_ENV, "IOT_SWARM_COSMOS_PASSWORD")
"""The variables ``iot-swarm`` may read a secret from (the broker, a source URL, Oracle)."""
_taken: dict[str, str] = {}


def stash(names: tuple[str, ...]) -> None:
    """Move these variables out of the environment, for ``take_from_environment`` later."""
    for name in names:
        if name in os.environ:
            _taken[name] = os.environ.pop(name)


def take_from_environment(name: str) -> str | None:
    """Read ``name`` and remove it from this process's environment, so no child inherits it.

    The entry points take theirs before anything can start a child; the code that needs the
    value then takes it from here, once (a second run in the same process reads afresh)."""
    stash((name,))
    return _taken.pop(name, None) or None


AWS_CREDENTIALS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}


def stash_aws_credentials() -> None:
    """``live-cosmos``'s entry point: boto3's credential variables leave the environment
    (together: a key ID without its secret is of no use to a child either)."""
    if os.environ.get(AWS_CREDENTIALS["aws_secret_access_key"]):
        stash(tuple(AWS_CREDENTIALS.values()))


def aws_credentials() -> dict[str, str]:
    """The stashed AWS keys as ``S3Resource`` settings; empty when none were stashed, so
    boto3's own chain (the environment, profiles, instance roles) applies as before."""
    return {field: _taken[name] for field, name in AWS_CREDENTIALS.items() if _taken.get(name)}
