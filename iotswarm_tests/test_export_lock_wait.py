"""An export waiting for the table lock says who holds it, in its log and on the terminal.

The Dagster log already named the holder; the terminal said nothing while ``live-cosmos`` waited.
Now stderr gets one line when the wait begins (who holds the lock, since when) and one when the
lock is taken (how long it waited).
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_tests.export_faults import ROOT, T0, export, half_hours, seed
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows

LIVE_COSMOS = Path(sys.executable).with_name("live-cosmos")


def test_a_command_line_export_waiting_for_the_lock_says_who_holds_it_and_how_long_it_waited(
    tmp_path, cosmos_url
):
    for table in catalogue.TABLE_NAMES:
        insert_rows(cosmos_url, table, [])
    times = [datetime(2024, 6, 1) + timedelta(minutes=30 * i) for i in range(2)]
    insert_rows(cosmos_url, SOILMET, make_rows(SOILMET, "ALIC1", times))
    state_dir = tmp_path / "state"
    config = tmp_path / "livecosmos.cfg"
    config.write_text(
        f"url='{cosmos_url}'\nobject_dir='{tmp_path / 'objects'}'\nstate_dir='{state_dir}'\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(state_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        export = subprocess.Popen(
            [str(LIVE_COSMOS), str(config), SOILMET, "--since", "2024-05-31T23:00"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in export.stderr], daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=120)  # the export says it waits (before: nothing, ever)
            assert export.poll() is None  # it is waiting, not finished
            holder.stdin.close()  # the holder finishes
            out = export.stdout.read()  # until the export ends
            export.wait(timeout=300)
            reader.join(timeout=60)
        finally:
            export.kill()
        rest = "".join(lines.queue)
    finally:
        holder.kill()
    assert first.startswith(
        f"live-cosmos: waiting for the lock of {SOILMET} held by {holder.pid}/"
        f"{socket.gethostname()} since "
    ), first + rest
    assert first.rstrip().endswith(" UTC")
    lines = rest.strip().splitlines()
    assert [line for line in lines if "waiting for the lock" in line] == []  # said once
    [got] = [line for line in lines if "got the lock" in line]
    assert got.startswith(f"live-cosmos: got the lock of {SOILMET} after ") and got.endswith(" s")
    assert export.returncode == 0, rest
    assert f"{SOILMET}: 2 rows, 2 payloads, 2 objects" in out


LOCK_HOLDER = """
import sys
from iotswarm_pipelines.export.state_store import StateStore
with StateStore(state_dir=sys.argv[1]).locked("LEVEL1_SOILMET_30MIN"):
    print("held", flush=True)
    sys.stdin.read()
"""


class _Heard(logging.Handler):
    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.lines, self.event = wanted, [], threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted in record.getMessage():
            self.lines.append(record.getMessage())
            self.event.set()


@pytest.mark.usefixtures("fresh_engines")
def test_an_export_waiting_for_the_table_lock_says_who_holds_it(
    cosmos_url, local_objects, local_state
):
    seed(cosmos_url, {"ALIC1": half_hours(T0, 2)})
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, local_state.state_dir],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    heard = _Heard("waiting for the lock of")
    log = logging.getLogger("iotswarm-test-lock-wait")
    log.addHandler(heard)
    try:
        assert holder.stdout.readline() == "held\n"
        waiting = threading.Thread(
            target=lambda: export(cosmos_url, local_objects, local_state, log=log)
        )
        waiting.start()
        assert heard.event.wait(timeout=60)
        assert waiting.is_alive()  # it waits; it has not exported around the lock
        holder.stdin.close()  # the holder finishes
        waiting.join(timeout=60)
    finally:
        holder.kill()
        log.removeHandler(heard)
    [line] = heard.lines
    assert line.startswith(
        f"waiting for the lock of {SOILMET} held by {holder.pid}/{socket.gethostname()} since "
    )
    assert line.endswith(" UTC")
    assert len(local_objects.list_keys()) == 2
