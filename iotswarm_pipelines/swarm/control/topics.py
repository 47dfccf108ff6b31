"""The topics of Campbell's command-and-control API for one device."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GROUP_ID = "cs/v2"  # the team's client's default topic


@dataclass(frozen=True)
class Topics:
    group_id: str
    device_id: str

    @property
    def commands(self) -> str:
        """What the logger subscribes to on connecting: ``<group>/cc/<device>/#``."""
        return f"{self.group_id}/cc/{self.device_id}/#"

    @property
    def state(self) -> str:
        return f"{self.group_id}/state/{self.device_id}/"

    def response(self, command: str, suffix: str = "") -> str:
        topic = f"{self.group_id}/cr/{self.device_id}/{command}"
        return f"{topic}/{suffix}" if suffix else topic

    def command_of(self, topic: str) -> str | None:
        """The command a ``cc`` topic names (``reboot``), or None for any other topic."""
        prefix = f"{self.group_id}/cc/{self.device_id}/"
        return topic[len(prefix) :] if topic.startswith(prefix) else None
