"""The console commands' entry points: secrets leave this process's environment first.

A child process inherits its parent's environment, and importing Dagster already starts one
(its vendored croniter runs ``file`` through ``platform.architecture()``); so each command
takes its secrets out of the environment (``secret_files``) before it imports anything that
might start a child, and hands them on by other means (SECURITY.md).
"""

from __future__ import annotations

import sys

from iotswarm_pipelines import secret_files


def live_cosmos() -> None:
    secret_files.stash_aws_credentials()
    from iotswarm_pipelines.export.cli import main

    main()


def iot_swarm() -> None:
    secret_files.stash(secret_files.SWARM_SECRETS)
    from iotswarm_pipelines.swarm.cli import main

    sys.exit(main())
