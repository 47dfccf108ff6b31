"""A private Mosquitto broker on loopback, for the demo and the benchmarks.

The demo must work on a fresh Debian machine, so a missing ``mosquitto`` is installed from
Debian's packages. The broker runs from its own folder with its own config and port, so it never
disturbs (or depends on) a system broker already on 1883.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class BrokerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary(install: bool = True) -> str:
    """Path of ``mosquitto``, installing Debian's package when it is missing and allowed."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not install or not shutil.which("apt-get"):
        raise BrokerStartError(
            "mosquitto is not installed: install it with `apt-get install mosquitto`"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing Debian's mosquitto package ...", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "mosquitto", "mosquitto-clients"],
        check=True,
        env=env,
    )
    return mosquitto_binary(install=False)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class LocalMosquitto:
    """A Mosquitto process owned by this object: ``start()``, use ``host``/``port``, ``stop()``."""

    workdir: Path
    port: int = 0
    extra_config: str = ""
    host: str = "127.0.0.1"
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def start(self, timeout: float = 15.0) -> LocalMosquitto:
        binary = mosquitto_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.workdir / "mosquitto.conf"
        # Running as root, mosquitto would drop to the `mosquitto` user and lose access to
        # files in our folder; staying as the invoking user keeps the folder readable.
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n" + (f"user {user}\n" if user else "") + self.extra_config
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self._process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(
                    f"mosquitto did not start on {self.host}:{self.port}; "
                    f"see {self.workdir / 'mosquitto.log'}"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
