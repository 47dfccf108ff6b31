"""What a CR1000X does with each command of Campbell's MQTT command-and-control API.

`Logger.handle(command, payload)` returns the actions to take, in order; the engine performs
them on the device's connection and reports back downloads (`fetched`) and historic reads
(`history`), which return further actions. No I/O here and nothing raises on a payload: any
bytes on any command topic either work or get the real logger's answer.

The answers' topics and texts are those a real CR1000X gave (the team's client repository's
``responses.md``). Where that record is silent the choice is written down in
docs/control-api.md: a payload that is not a JSON object, an unknown command or an unknown
``action`` gets no answer, as a logger ignores what it cannot parse.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iotswarm_pipelines.clock import naive_utc
from iotswarm_pipelines.payloads import PayloadFormat
from iotswarm_pipelines.swarm.control import historic
from iotswarm_pipelines.swarm.control.logger import CPU, LoggerState, split_path
from iotswarm_pipelines.swarm.control.topics import Topics

COMMANDS = (
    "OS",
    "program",
    "mqttConfig",
    "fileControl",
    "editConst",
    "setting",
    "historicData",
    "talkThru",
    "setVar",
    "getVar",
    "reboot",
)
OS_ATTEMPTS = 3  # the real logger reports "OS file download" three times before giving up
COM_PORTS = frozenset(
    {"ComRS232", "ComME", "ComC1", "ComC3", "ComC5", "ComC7"}
    | {"ComSDC7", "ComSDC8", "ComSDC10", "ComSDC11"}
)
"""The CR1000X's serial ports; none is opened by the simulated program."""


@dataclass(frozen=True)
class Publish:
    """One message; ``answer`` marks a command's last one (its answer latency ends there)."""

    topic: str
    payload: bytes
    answer: bool = False
    error: bool = False


@dataclass(frozen=True)
class Restart:
    """Say ``offline`` on the state topic (unless None), leave the broker cleanly, come back
    after the reboot delay (saying online), then publish ``then``. ``answer``: the command is
    answered once back online (an OS update sends no ``cr`` message)."""

    offline: bytes | None
    then: tuple[Publish, ...] = ()
    answer: bool = False


@dataclass(frozen=True)
class Fetch:
    """An HTTP(S) GET of ``url`` for an OS, program or MQTT configuration download."""

    purpose: str
    url: str
    file_name: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class ReadHistory:
    """Read the site's rows of ``table`` with start <= DATE_TIME <= end, then `history`."""

    table: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Download:
    """A GET's outcome: the HTTP status (None: no response at all) and the body."""

    status: int | None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Action = Publish | Restart | Fetch | ReadHistory


def _json(value: Mapping[str, Any]) -> bytes:
    """The real logger writes compact JSON: ``{"success":"File deleted"}``."""
    return json.dumps(value, separators=(",", ":")).encode()


def _parse(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested beyond the parser
        return None
    return value if isinstance(value, dict) else None


def _text(value: object) -> str | None:
    """A string as the logger reads one: JSON strings and numbers; anything else is absent."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _shown(value: object) -> str:
    text = _text(value)
    return "" if text is None else text


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time as naive UTC (the data source's times), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return naive_utc(moment)


def valid_mqtt_config(body: bytes) -> bool:
    """Campbell's binary MQTT settings file: header 0x0020, entries, a closing null byte."""
    return len(body) >= 3 and body[:2] == b"\x00\x20" and body[-1:] == b"\x00"


class Logger:
    """One device's side of the API: its topics, its state, and the rules of every command."""

    def __init__(self, state: LoggerState, topics: Topics, payload_format: PayloadFormat):
        self.state = state
        self.topics = topics
        self.payload_format = payload_format
        self.const_programs = {state.program} if state.program else set()
        self.const_table = dict(state.constants or {})

    # state topic ---------------------------------------------------------------------------

    def state_payload(self, state: str, **extra: str) -> bytes:
        return _json({"clientId": self.state.client_id, "state": state, **extra})

    @property
    def online(self) -> bytes:
        return self.state_payload("online")

    @property
    def will(self) -> bytes:
        """The last will: what the broker says for a device that vanished."""
        return self.state_payload("offline")

    def _state(self, state: str, **extra: str) -> Publish:
        return Publish(self.topics.state, self.state_payload(state, **extra))

    def _transfer(self, what: str) -> Publish:
        return self._state("online", fileTransfer=what)

    def _reply(self, command: str, body: Mapping[str, Any], *, last: bool = True) -> Publish:
        error = "error" in body or (command == "talkThru")
        return Publish(self.topics.response(command), _json(body), answer=last, error=error)

    def _success(self, command: str, text: str) -> Publish:
        return self._reply(command, {"success": text})

    def _error(self, command: str, text: str, *, last: bool = True) -> Publish:
        return self._reply(command, {"error": text}, last=last)

    # commands ------------------------------------------------------------------------------

    def handle(self, command: str, payload: bytes) -> list[Action]:
        """The actions answering ``payload`` on ``<group>/cc/<device>/<command>``."""
        if command not in COMMANDS:
            return []
        body = _parse(payload)
        if body is None:
            return []
        return getattr(self, f"_{command}")(body)

    def _reboot(self, body: dict[str, Any]) -> list[Action]:
        if body.get("action") != "reboot":
            return []
        self.state.reboots += 1
        done = self._success("reboot", "Reboot complete")
        return [Restart(self.state_payload("offline", reason="Reboot command"), (done,))]

    def _fileControl(self, body: dict[str, Any]) -> list[Action]:
        action = body.get("action")
        handler = {
            "list": self._list,
            "delete": self._delete,
            "stop": self._stop,
            "run": self._run,
        }.get(action if isinstance(action, str) else "")
        return handler(body) if handler else []

    def _list(self, body: dict[str, Any]) -> list[Action]:
        drive = self.state.drive(body.get("drive"))
        if drive is None or drive not in self.state.files:
            shown = drive or f"{_shown(body.get('drive'))}:"
            return [self._error("fileControl", f"Directory '{shown}' does not exist")]
        listing = {"drive": drive, "clientID": self.state.client_id}
        return [self._reply("fileControl", {**listing, "fileList": self.state.files[drive]})]

    def _find(self, body: dict[str, Any]) -> tuple[str, str] | None:
        drive, name = self.state.drive(body.get("drive")), body.get("fileName")
        if drive is None or not isinstance(name, str) or not name:
            return None
        if ":" in name:
            drive, name = split_path(name)
        return (drive, name) if name in self.state.files.get(drive, ()) else None

    def _delete(self, body: dict[str, Any]) -> list[Action]:
        found = self._find(body)
        if found is None:
            return [
                self._error("fileControl", "File does not exist", last=False),
                self._error("fileControl", "File delete failed"),
            ]
        drive, name = found
        self.state.files[drive].remove(name)
        return [self._success("fileControl", "File deleted")]

    def _stop(self, _body: dict[str, Any]) -> list[Action]:
        self.state.program = None
        offline = self._state("offline", reason="Stopping program")
        return [offline, self._success("fileControl", "Program stopped")]

    def _run(self, body: dict[str, Any]) -> list[Action]:
        found = self._find(body)
        if found is None:
            return [self._error("fileControl", "File does not exist")]
        self._load("".join(found))
        offline = self._state("offline", reason="Running program")
        return [offline, self._success("fileControl", "Program running")]

    def _load(self, path: str) -> None:
        self.state.program = path
        if path not in self.const_programs:
            self.state.constants = None
        elif self.state.constants is None:
            self.state.constants = dict(self.const_table)

    def _editConst(self, body: dict[str, Any]) -> list[Action]:
        constants = self.state.constants
        if not constants:
            return [self._error("editConst", "No constant table to edit")]
        changes = {k: t for k, v in body.items() if k in constants and (t := _text(v)) is not None}
        if not changes:
            return [self._success("editConst", "No constant table changes")]
        constants.update(changes)
        offline = self._state("offline", reason="Changed constants, recompiling")
        return [offline, self._success("editConst", "Editing constants succeeded")]

    def _setting(self, body: dict[str, Any]) -> list[Action]:
        action, given = body.get("action"), body.get("name")
        state = self.state
        if action == "apply":
            state.apply()
            return [self._success("setting", "Settings applied, no reboot required")]
        if action not in ("set", "publish"):
            return []
        name = state.setting_name(given)
        if name is None:
            return [self._error("setting", f"Invalid setting: {_shown(given)}")]
        if action == "publish":
            shown = {"setting": name, "value": state.published_setting(name)}
            return [self._reply("setting", shown)]
        state.pending[name] = _shown(body.get("value"))
        if _flag(body.get("apply")):
            state.apply()
            return [self._success("setting", "Settings applied, no reboot required")]
        return [self._success("setting", "Settings set successfully")]

    def _setVar(self, body: dict[str, Any]) -> list[Action]:
        name, value = body.get("name"), body.get("value")
        public = self.state.public()
        if not isinstance(name, str) or name not in public or _text(value) is None:
            return [self._error("setVar", "Set variable failed")]
        current = public[name]
        if isinstance(current, (int, float)) and not isinstance(current, bool):
            # a number stays a number; a text into a FLOAT succeeds but sets nothing
            with contextlib.suppress(ValueError, OverflowError):
                self.state.overrides[name] = type(current)(float(_shown(value)))
        else:
            self.state.overrides[name] = _shown(value)
        return [self._success("setVar", "Set variable succeeded")]

    def _getVar(self, body: dict[str, Any]) -> list[Action]:
        name = body.get("name")
        public = self.state.public()
        if not isinstance(name, str) or name not in public:
            return [self._error("getVar", f"Invalid field: {_shown(name)}")]
        return [self._reply("getVar", {"name": name, "value": public[name]})]

    def _talkThru(self, body: dict[str, Any]) -> list[Action]:
        port = body.get("comPort")
        if not isinstance(port, str) or port not in COM_PORTS:
            return [self._reply("talkThru", {"response": "Illegal ComPort"})]
        return [self._reply("talkThru", {"response": "ComPort must be open to use MQTT Talk Thru"})]

    def _historicData(self, body: dict[str, Any]) -> list[Action]:
        table = body.get("table")
        if not isinstance(table, str) or table not in self.state.tables:
            return [self._error("historicData", "Historic Data: Table does not exist!")]
        start, end = parse_time(body.get("start")), parse_time(body.get("end"))
        if start is None or end is None:
            text = "Historic Data: start and end must be ISO 8601 times"
            return [self._error("historicData", text)]
        return [ReadHistory(table, start, end)]

    def history(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[Action]:
        """The rows read for a historicData command, as CSIJSON messages under 128 KB."""
        topic = self.topics.response("historicData", f"{table}/cj")
        template = rows[0] if rows else self.state.current_row()
        bodies = historic.messages(self.state.site_id, rows, self.payload_format, template)
        last = len(bodies) - 1
        return [Publish(topic, body, answer=i == last) for i, body in enumerate(bodies)]

    # downloads -----------------------------------------------------------------------------

    def _OS(self, body: dict[str, Any]) -> list[Action]:
        url = _shown(body.get("url"))
        return [self._transfer("OS file download"), Fetch("OS", url)]

    def _program(self, body: dict[str, Any]) -> list[Action]:
        url = _shown(body.get("url"))
        name = body.get("fileName", body.get("filename"))
        name = name if isinstance(name, str) else ""
        return [self._transfer("Program file download"), Fetch("program", url, name)]

    def _mqttConfig(self, body: dict[str, Any]) -> list[Action]:
        url = _shown(body.get("url"))
        return [self._transfer("MQTT config file download"), Fetch("mqttConfig", url)]

    def fetched(self, fetch: Fetch, outcome: Download) -> list[Action]:
        """What follows a download, by its purpose."""
        if fetch.purpose == "OS":
            if outcome.ok:
                offline = self.state_payload("offline", reason="OS update")
                return [self._transfer("Flashing OS"), Restart(offline, answer=True)]
            if fetch.attempt < OS_ATTEMPTS:
                retry = Fetch("OS", fetch.url, attempt=fetch.attempt + 1)
                return [self._transfer("OS file download"), retry]
            return [self._error("OS", "OS Download Failed")]
        if fetch.purpose == "program":
            if outcome.status is None or not fetch.file_name or ":" in fetch.file_name:
                return [self._error("program", "Program download failed")]
            files = self.state.files[CPU]
            if fetch.file_name not in files:
                files.append(fetch.file_name)
            self._load(f"{CPU}{fetch.file_name}")
            loaded = self._success("program", "Program loaded successfully")
            offline = self.state_payload("offline", reason="Loading program")
            return [Restart(offline, (loaded, self._state("online")))]
        if outcome.status is None or not outcome.ok:
            code = outcome.status or 0
            return [self._error("mqttConfig", f"MQTT Config file download failed, code: {code}")]
        if not valid_mqtt_config(outcome.body):
            return [self._error("mqttConfig", "MQTT Config file parse failed")]
        return [
            self._state("offline", reason="Loading MQTT Configuration"),
            self._success("mqttConfig", "MQTT configuration file loaded"),
            Restart(None),
        ]
