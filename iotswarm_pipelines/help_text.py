"""How every command's ``--help`` ends: its examples, then its exit codes.

Each example runs as printed on the demo data (after ``make demo``, from the checkout, with the
README's ``livecosmos.cfg``); iotswarm_tests/test_help_examples.py runs them all. No imports
beyond the standard library, so a help answers without loading anything heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

INTERRUPTED = "130 interrupted (Ctrl-C), 143 stopped by SIGTERM"

EXPORT_EXITS = (
    f"0 done, 1 an export failed, 2 bad arguments, config or an unreachable source; {INTERRUPTED}"
)
RECONCILE_EXITS = (
    "0 complete (or healed), 1 rows missing and not healed (or the store failed), "
    f"2 bad input; {INTERRUPTED}"
)
SWARM_EXITS = (
    "0 everything sent was delivered (or the command did what it says), 1 something was lost "
    "or unacknowledged (or the run failed), 2 bad input or an unreachable broker or database; "
    f"{INTERRUPTED}"
)
SAMPLE_EXITS = f"0 done, 1 a database error while writing, 2 bad input; {INTERRUPTED}"


def epilog(examples: Sequence[str], exits: str) -> str:
    """``example: …`` lines, then ``exit codes: …`` (for a raw-description formatter)."""
    return "\n".join([*(f"example: {example}" for example in examples), f"exit codes: {exits}"])


class Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own; example lines stay whole, so each
    copies as one command."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n".join(
            indent + line if line.startswith("example: ") else fill(line, width, indent)
            for line in text.splitlines()
        )
