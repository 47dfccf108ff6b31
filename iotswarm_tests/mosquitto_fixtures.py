"""Private Mosquitto brokers for the MQTT engine tests: plain, password, and mutual TLS.

Each broker is its own process on a free loopback port with a generated config, so a test can
stop and restart it (a broker restart mid-run) without touching the machine's broker.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from iotswarm_pipelines.local_broker import free_port, mosquitto_binary
from iotswarm_tests.services import port_open, unavailable


@dataclass
class Mosquitto:
    """A mosquitto process with a fixed port and config: `start()`, `stop()`, start again."""

    workdir: Path
    config: str  # listener lines and options; `{port}` is filled in
    port: int = field(default_factory=free_port)
    persistent: bool = False  # keep sessions and queued messages across a restart (on disk)
    process: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        try:
            binary = mosquitto_binary(install=False)
        except RuntimeError as err:
            unavailable(str(err))
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\n"
            if self.persistent
            else "persistence false\n"
        )
        conf.write_text(persistence + user + self.config.format(port=self.port))
        log = self.log_path
        with log.open("ab") as out:
            self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port, timeout=0.2):  # readiness poll, not ordering
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start; see {log}")
            time.sleep(0.02)
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.log"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@dataclass(frozen=True)
class TlsFiles:
    ca: str  # the CA that signed the broker's and the good client's certificates
    client_cert: str
    client_key: str
    rogue_cert: str  # a client certificate from another CA
    rogue_key: str


def _write(path: Path, blob) -> str:
    blob.write_to_path(str(path))
    path.chmod(0o644)
    return str(path)


@pytest.fixture
def persistent_broker(tmp_path) -> Iterator[Mosquitto]:
    """Anonymous, saving sessions to disk when stopped: the broker a restart test needs."""
    config = "listener {port} 127.0.0.1\nallow_anonymous true\n"
    broker = Mosquitto(tmp_path, config, persistent=True).start()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker(tmp_path_factory) -> Iterator[Mosquitto]:
    """A plain broker of the test's own, which it may stop for good."""
    config = "listener {port} 127.0.0.1\nallow_anonymous true\n"
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-gone"), config).start()
    yield broker
    broker.stop()


@pytest.fixture
def broker_pair(tmp_path) -> Iterator[list[Mosquitto]]:
    """Two anonymous brokers; each one's log (`log_path`) names the address clients came from."""
    config = "listener {port} 127.0.0.1\nallow_anonymous true\n"
    brokers = [Mosquitto(tmp_path, config).start() for _ in range(2)]
    yield brokers
    for broker in brokers:
        broker.stop()


def start_password_broker(workdir: Path, user: str, password: str) -> Mosquitto:
    """A broker that refuses anonymous clients and knows one user."""
    passwords = workdir / "passwords"
    passwords.touch(mode=0o644)  # mosquitto drops root: its own user must read the file
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), user, password],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o644)
    config = f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
    return Mosquitto(workdir, config).start()


@pytest.fixture(scope="module")
def password_broker(tmp_path_factory) -> Iterator[Mosquitto]:
    """Anonymous clients refused; user `swarm` with password `s3cret-pass`."""
    broker = start_password_broker(
        tmp_path_factory.mktemp("mosquitto-password"), "swarm", "s3cret-pass"
    )
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> TlsFiles:
    workdir = tmp_path_factory.mktemp("tls")
    workdir.chmod(0o755)
    ca, rogue_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    _write(workdir / "server.pem", server.cert_chain_pems[0])
    _write(workdir / "server.key", server.private_key_pem)
    client, rogue = ca.issue_cert("device-0001"), rogue_ca.issue_cert("device-0001")
    return TlsFiles(
        ca=_write(workdir / "ca.pem", ca.cert_pem),
        client_cert=_write(workdir / "client.pem", client.cert_chain_pems[0]),
        client_key=_write(workdir / "client.key", client.private_key_pem),
        rogue_cert=_write(workdir / "rogue.pem", rogue.cert_chain_pems[0]),
        rogue_key=_write(workdir / "rogue.key", rogue.private_key_pem),
    )


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, tls_files) -> Iterator[Mosquitto]:
    """A mutual-TLS listener: clients need a certificate signed by `tls_files.ca`."""
    workdir = Path(tls_files.ca).parent
    config = (
        "listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"cafile {tls_files.ca}\n"
        f"certfile {workdir / 'server.pem'}\n"
        f"keyfile {workdir / 'server.key'}\n"
        "require_certificate true\n"
    )
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), config).start()
    yield broker
    broker.stop()
