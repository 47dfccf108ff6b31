"""Run a Python script with one folder on a tiny tmpfs, to fill a disk on purpose.

The tmpfs is mounted in a private mount namespace (``unshare --mount``), so nothing outside the
script's process sees it, and it vanishes with the process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_on_small_disk(
    folder: Path, size: str, script: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``python -c script folder *args`` with ``folder`` a tmpfs of ``size`` (``8k``, ``16k``)."""
    mount_and_run = f'mount -t tmpfs -o size={size} tmpfs "$1" && exec "$0" -c "$2" "$1" "${{@:3}}"'
    return subprocess.run(
        [
            *("unshare", "--mount", "bash", "-c", mount_and_run),
            *(sys.executable, str(folder), script, *args),  # $0, $1, $2, then the rest
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
