"""``python -m iotswarm_pipelines.livecosmos CONFIG TABLE``: the old tool's module entry point."""

from iotswarm_pipelines.export.cli import main

if __name__ == "__main__":
    main()
