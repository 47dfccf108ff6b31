"""A broker refusing ``iot-swarm`` (a wrong or missing password, a client certificate from
another CA) is one stderr line naming the broker, exit 2, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from iotswarm_pipelines.secret_files import SWARM_PASSWORD_ENV as PASSWORD_ENV
from iotswarm_pipelines.swarm.cli import main
from iotswarm_tests.swarm_runs import REFERENCE_CSV


def iot_swarm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "iotswarm_pipelines.swarm.cli",
            "--source",
            str(REFERENCE_CSV),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,  # a safety net against a hang, not a timing assertion
        env=env,
        check=False,
    )


def test_iot_swarm_refused_credentials_is_one_line_exit_2(password_broker):
    password = f"wrong-password-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, PASSWORD_ENV: password}
    port = str(password_broker.port)
    result = iot_swarm("--port", port, "--username", "swarm", "--verify", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-swarm: error: "), result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "not authorized" in lines[0].lower(), lines
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert password not in result.stderr


def test_iot_swarm_without_a_password_is_refused_in_one_line(password_broker, monkeypatch, capsys):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    argv = ["--source", str(REFERENCE_CSV), "--port", str(password_broker.port)]
    assert main([*argv, "--username", "swarm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{password_broker.port}" in err[0], err


def test_iot_swarm_refused_client_certificate_is_one_line_exit_2(tls_broker, tls_files):
    result = iot_swarm(
        "--port", str(tls_broker.port), "--ca-file", tls_files.ca,
        "--cert-file", tls_files.rogue_cert, "--key-file", tls_files.rogue_key,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{tls_broker.port}" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
