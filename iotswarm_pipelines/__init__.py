"""Dagster pipelines for COSMOS-UK: live export to S3 and an MQTT device swarm."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iotswarm-pipelines")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
