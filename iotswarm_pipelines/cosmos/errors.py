"""The COSMOS source's errors, apart from the source: code that reports them (the swarm's
planning, the commands) needs neither SQLAlchemy nor Dagster to name them."""

from iotswarm_pipelines.cosmos.catalogue import UnknownTableError


class SourceError(Exception):
    """The COSMOS database cannot answer; the message says what is wrong and never a password."""


class SourceTableError(SourceError, UnknownTableError):
    """A table name that is not in the catalogue, or a catalogue table the database lacks."""
