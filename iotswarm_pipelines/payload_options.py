"""The payload text's two options, declared once for both command trees.

The export and the swarm both write CR1000X payloads and must never import each other, so what
``prog_name`` and ``strict_json`` are (type, default, meaning) lives here, beside neither. The
export's option models extend ``PayloadOptions``; the swarm's model takes each default and
description from it, so both ``--help``s and the docs' tables say the same. Plain
data, no Dagster.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from iotswarm_pipelines import payloads


class PayloadOptions(BaseModel):
    """The payload text's choices: chosen once per destination, because a change gives every
    payload a new text and so a new key."""

    prog_name: str = Field(
        default=payloads.DEFAULT_PROG_NAME,
        description=(
            "prog_name written in every payload; the old tool's spelling is "
            "CPU:iotswarm-<its version>.CR1X, e.g. CPU:iotswarm-1.6.10.CR1X."
        ),
    )
    strict_json: bool = Field(
        default=False,
        description=(
            "Write NaN and +-Infinity as null (RFC 8259 JSON) instead of the old tool's NaN, "
            "Infinity, -Infinity (which Python's json reads back)."
        ),
    )

    @property
    def payload_format(self) -> payloads.PayloadFormat:
        return payloads.PayloadFormat(prog_name=self.prog_name, strict_json=self.strict_json)


DEFAULTS = PayloadOptions()
"""Each option's default, for models that declare the same options in their own way."""
