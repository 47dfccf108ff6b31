"""``make dev`` starts the UI without warnings an operator cannot act on.

dagster 1.13.27's ``dagster dev`` warned that a ``dagster.yaml`` sits in the current folder while
DAGSTER_HOME points elsewhere (expected: the home links to it) and that ``dg dev`` supersedes it.
``make dev`` now runs from the instance's folder and silences the supersession notice; this
starts it on a free port in a scratch checkout, waits until the webserver answers, and stops it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from iotswarm_tests.test_readme_commands import REPO, checkout  # noqa: F401 (fixture)

SERVING = "Serving dagster-webserver on"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, dev: subprocess.Popen, seconds: float = 120) -> bool:
    """Whether the webserver answers within ``seconds`` (it logs before it binds its port)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and dev.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status == 200
        except OSError:
            time.sleep(0.5)  # a readiness poll with a deadline, not a synchronisation sleep
    return False


def test_make_dev_serves_without_the_expected_warnings(checkout):  # noqa: F811
    root = checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTSWARM_", "DAGSTER_"))}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    port = _free_port()
    dev = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DEV_ARGS=-p {port}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    watchdog = threading.Timer(300, lambda: os.killpg(dev.pid, signal.SIGKILL))
    watchdog.start()
    lines: list[str] = []
    try:
        assert dev.stdout is not None
        for line in dev.stdout:
            lines.append(line)
            if SERVING in line:
                break
        assert any(SERVING in line for line in lines), "".join(lines[-20:])
        assert _answers(f"http://127.0.0.1:{port}/server_info", dev), "".join(lines[-20:])
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            rest, _ = dev.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            rest, _ = dev.communicate()
        watchdog.cancel()
    text = "".join(lines) + rest
    assert "SupersessionWarning" not in text and "dg dev" not in text, text[-3000:]
    assert "Found a dagster instance configuration" not in text, text[-3000:]
    assert (root / ".dagster_home" / "dagster.yaml").is_symlink()
