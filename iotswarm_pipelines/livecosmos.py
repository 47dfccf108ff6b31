"""``python -m iotswarm_pipelines.livecosmos CONFIG TABLE``: the old tool's module entry point."""

from iotswarm_pipelines.entry import live_cosmos

if __name__ == "__main__":
    live_cosmos()
