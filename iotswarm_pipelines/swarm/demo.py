"""The swarm's part of ``make demo``: a short verified swarm against the demo's broker."""

from __future__ import annotations

from iotswarm_pipelines.swarm.cli import run


def run_demo_swarm(source_url: str, host: str = "127.0.0.1", port: int = 1883) -> str:
    """36 devices cloned from the sample sites, 3 cycles each, QoS 1 with the verifier.

    Returns the report as ``iot-swarm`` prints it; raises ``CommandError`` if it cannot run.
    """
    _, text = run(
        [
            "--source", source_url,
            "--host", host,
            "--port", str(port),
            "--devices", "36",
            "--mode", "loop",
            "--max-cycles", "3",
            "--sleep-time", "1",
            "--delay-start",
            "--qos", "1",
            "--verify",
            "--swarm-name", "demo",
            "--mqtt-prefix", "iotswarm-demo",
        ]
    )  # fmt: skip
    return text
