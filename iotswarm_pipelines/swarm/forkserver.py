"""Preloaded by the forkserver that ``iot-swarm``'s shard steps fork from.

Preloading the project saves each step the seconds a fresh interpreter needs to import Dagster.
The server also ignores SIGTERM: systemd stops a service by sending SIGTERM to every process of
its control group, and Dagster reads a dead forkserver as crashed steps, which would lose the
report. The server still ends with its run (when the run's process closes its socket), and the
steps forked from it install their own SIGTERM handling.
"""

import signal
import sys

import iotswarm_pipelines.swarm.ops  # noqa: F401  (the preload itself)

if "multiprocessing.forkserver" in " ".join(sys.orig_argv):  # only in the server process
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
