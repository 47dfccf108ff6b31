"""The swarm job survives a broker restart mid-run (a private Mosquitto that keeps sessions)."""

from __future__ import annotations

import threading
import uuid

from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.launch import cli_swarm_job
from iotswarm_tests.services import wait_until
from iotswarm_tests.swarm_runs import swarm_config, swarm_run_config


def test_swarm_job_survives_a_broker_restart_and_reports_what_the_verifier_saw(
    persistent_broker, tmp_path
):
    """The broker is restarted once the shard's saved positions show 60 of 300 messages made.

    Persistent sessions (publishers and verifier) on a broker that saves them: the job's
    report must count every message acknowledged and delivered, none lost.
    """
    name = f"iotswarm-rel-restart-{uuid.uuid4().hex[:8]}"
    devices, cycles = 10, 30
    plan = swarm_config(
        name,
        tmp_path,
        per_site=devices,
        max_cycles=cycles,
        sleep_time=0.1,
        qos=1,
        verify=True,
        progress_interval=0.1,
    )
    mqtt = {"port": persistent_broker.port, "clean_session": False}
    restarted = threading.Event()

    def made() -> int:
        try:
            session = sessions.load_session(name, str(tmp_path))
        except Exception:  # a file mid-replace; the next poll reads it
            return 0
        return sum(p.cycles for p in session.positions.values()) if session else 0

    def restart_when_publishing() -> None:
        wait_until(lambda: made() >= 60, 120, "60 messages made")
        persistent_broker.stop()
        persistent_broker.start()
        restarted.set()

    watcher = threading.Thread(target=restart_when_publishing, daemon=True)
    watcher.start()
    result = cli_swarm_job.execute_in_process(
        run_config=swarm_run_config(plan, mqtt), raise_on_error=False
    )
    watcher.join(timeout=120)
    assert restarted.is_set()
    assert result.success
    report = result.output_for_node("swarm_report")
    total = devices * cycles
    counts = (report.sent, report.acknowledged, report.failed, report.delivered, report.lost)
    assert counts == (total, total, 0, total, 0), report
    assert report.verified
    assert any("lost" in line for line in report.errors), report.errors  # the restart was seen
    [materialization] = result.asset_materializations_for_node("swarm_report")
    assert materialization.metadata["delivered"].value == total
    assert materialization.metadata["lost"].value == 0
