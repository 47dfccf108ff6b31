"""How long a command takes to answer ``--help`` or a bad argument, against ``python -c pass``.

Run: `.venv/bin/python -m benchmarks.bench_cli_startup` (about a minute; `--help`).

Each case runs the installed console script (as a user runs it) and, back to back, the same
interpreter with ``-c pass`` (the floor: starting Python at all), alternating which goes first,
`--pairs` times. It prints each pair's wall times, the median of each side and the median of
the pairs' ratios (command / reference); the machine may be shared, so only the ratio of
neighbouring runs compares. Target (issue 22, item 14): well under a second per answer.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
CASES = {
    "live-cosmos --help": ("live-cosmos", "--help"),
    "live-cosmos reconcile --help": ("live-cosmos", "reconcile", "--help"),
    "iot-swarm --help": ("iot-swarm", "--help"),
    "iot-swarm looping-csv --help": ("iot-swarm", "looping-csv", "--help"),
    "cosmos-sample --help": ("cosmos-sample", "--help"),
    "live-cosmos CONFIG (no TABLE: exit 2)": ("live-cosmos", "livecosmos.cfg"),
    "iot-swarm --qos 3 (exit 2)": ("iot-swarm", "--qos", "3"),
}


def wall(argv: Sequence[str], expected: int) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}, not {expected}")
    return seconds


def compare(argv: Sequence[str], expected: int, pairs: int) -> tuple[float, float, float, str]:
    """Median command time, median reference time, median ratio, and the pairs as text."""
    reference = [sys.executable, "-c", "pass"]
    commands, references = [], []
    for pair in range(pairs):
        if pair % 2 == 0:
            commands.append(wall(argv, expected))
            references.append(wall(reference, 0))
        else:
            references.append(wall(reference, 0))
            commands.append(wall(argv, expected))
    ratios = [c / r for c, r in zip(commands, references, strict=True)]
    text = ", ".join(f"{c:.2f}/{r:.2f}" for c, r in zip(commands, references, strict=True))
    return (
        statistics.median(commands),
        statistics.median(references),
        statistics.median(ratios),
        text,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, (command, *rest) in CASES.items():
        expected = 0 if "--help" in rest else 2
        median, reference, ratio, pairs = compare([str(BIN / command), *rest], expected, args.pairs)
        print(f"{name}: pairs (command/python -c pass, s) {pairs}", flush=True)
        rows.append((name, median, reference, ratio))
    print("\n| command | wall (median) | `python -c pass` | ratio |\n|---|---|---|---|")
    for name, median, reference, ratio in rows:
        print(f"| `{name}` | {median:.2f} s | {reference:.2f} s | {ratio:.1f} |")


if __name__ == "__main__":
    main()
