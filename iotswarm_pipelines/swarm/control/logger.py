"""One simulated CR1000X's state as the command API sees it: drives and files, the running
program, settings, Public variables and the constant table.

Plain data with no I/O. It lives as long as the device in the run, so settings and files
survive the device's reboots, as they survive a real logger's.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotswarm_pipelines.payloads import DEFAULT_OS_VERSION

CPU = "CPU:"
DRIVES = (CPU, "USR:", "CRD:", "USB:")
"""The CR1000X's drive names; only CPU: exists until a USR: drive is sized or a card inserted."""

SETTINGS: dict[str, str] = {
    "Baudrate": "115200,-115200,-115200,-115200,-115200,-115200",
    "Beacon": "0,0,0,0,0,0",
    "centralrouters": "",
    "CommsMemAlloc": "50000",
    "CSIO1net": "0",
    "DNS": "0.0.0.0,0.0.0.0",
    "EthernetInfo": "",
    "EthernetPower": "2",
    "FilesManager": "",
    "FTPEnabled": "0",
    "FTPPassword": "",
    "FTPPort": "21",
    "FTPUserName": "anonymous",
    "HTTPEnabled": "1",
    "HTTPHeader": "",
    "HTTPPort": "80",
    "HTTPSEnabled": "0",
    "HTTPSPort": "443",
    "IncludeFile": "",
    "IPAddressCSIO": "0.0.0.0",
    "IPBroadcastFiltered": "0",
    "IPAddressEth": "0.0.0.0",
    "IPGateway": "0.0.0.0",
    "IPGatewayCS": "0.0.0.0",
    "IPMaskCSIO": "255.255.255.0",
    "IPMaskEth": "255.255.255.0",
    "IPTrace": "0",
    "IPTraceCode": "0",
    "IPTraceComport": "0",
    "IsRouter": "0",
    "KeepAliveURL": "",
    "KeepAliveMin": "0",
    "MaxPacketSize": "1000",
    "Neighbors": "",
    "NTPServer": "",
    "PakBusAddress": "1",
    "PakBus": "",
    "PakBusNodes": "50",
    "PakBusPort": "6785",
    "PakBusTCPClients": "",
    "PakBusTCPPassword": "",
    "PingEnabled": "1",
    "pppDial": "",
    "pppDialResponse": "CONNECT",
    "pppInfo": "",
    "pppInterface": "0",
    "pppIPAddr": "0.0.0.0",
    "pppPassword": "",
    "pppUsername": "",
    "RouteFilters": "",
    "RS232Handshaking": "0",
    "RS232Power": "0",
    "RS232Timeout": "0",
    "Security": "0,0,0",
    "ServicesEnabled": "",
    "TCPClientConnections": "",
    "TCPMSS": "1460",
    "TCPPort": "6785",
    "TelnetEnabled": "1",
    "TLSConnections": "0",
    "TLSPassword": "",
    "TLSStatus": "",
    "USB": "0",
    "USRDriveFree": "0",
    "USRDriveSize": "0",
    "UTCOffset": "0",
    "Verify": "",
}
"""The setting names the team's client knows (its ``settings.txt``), with CR1000X defaults."""

PADDED_WIDTH = 6
PADDED_SETTINGS = frozenset(
    {
        "CommsMemAlloc",
        "FTPPort",
        "HTTPPort",
        "HTTPSPort",
        "KeepAliveMin",
        "MaxPacketSize",
        "PakBusAddress",
        "PakBusNodes",
        "PakBusPort",
        "TCPMSS",
        "TCPPort",
        "USRDriveFree",
        "USRDriveSize",
        "UTCOffset",
    }
)
"""Numeric settings the logger publishes right-aligned (the team's client strips the spaces);
flags and choices such as EthernetPower come back as they are."""

CONSTANTS: dict[str, str] = {"ScanInterval": "10", "TableInterval": "30", "SiteElevation": "0"}
"""The simulated program's ConstTable; a program downloaded by command has none."""


def settings_by_key() -> dict[str, str]:
    """Setting names are matched without regard to case; the key is the lower-case name."""
    return {name.lower(): name for name in SETTINGS}


_CANONICAL = settings_by_key()


def split_path(path: str) -> tuple[str, str]:
    """``CPU:prog.CR1X`` -> (``CPU:``, ``prog.CR1X``); a bare name is on CPU:."""
    drive, colon, name = path.partition(":")
    return (f"{drive}:", name) if colon else (CPU, path)


def padded(name: str, value: str) -> str:
    return value.rjust(PADDED_WIDTH) if name in PADDED_SETTINGS else value


@dataclass
class LoggerState:
    """A device's files, program, settings, variables and constants.

    ``current_row`` returns the row the device sent last (None before its first): its fields
    are the program's Public variables, with BattV and PTemp_C as every CR1000X program has.
    """

    client_id: str
    site_id: str
    program: str | None  # the running program's path (``CPU:name.CR1X``), None when stopped
    tables: tuple[str, ...]  # table names historicData accepts
    current_row: Callable[[], Mapping[str, Any] | None] = lambda: None
    files: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=lambda: dict(SETTINGS))
    pending: dict[str, str] = field(default_factory=dict)  # set, not yet applied
    constants: dict[str, str] | None = field(default_factory=lambda: dict(CONSTANTS))
    overrides: dict[str, Any] = field(default_factory=dict)  # setVar values until the next row
    overrides_row: int = 0
    os_version: str = DEFAULT_OS_VERSION
    mqtt_config: dict[int, bytes] = field(default_factory=dict)  # last loaded config file
    reboots: int = 0

    def __post_init__(self) -> None:
        if not self.files:
            self.files = {CPU: []}
            if self.program:
                drive, name = split_path(self.program)
                self.files.setdefault(drive, []).append(name)

    # settings ------------------------------------------------------------------------------

    @staticmethod
    def setting_name(name: object) -> str | None:
        return _CANONICAL.get(name.lower()) if isinstance(name, str) else None

    def published_setting(self, name: str) -> str:
        return padded(name, self.settings[name])

    def apply(self) -> None:
        self.settings.update(self.pending)
        self.pending.clear()

    # Public variables ----------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        """The Public table now: the current row's fields, BattV, PTemp_C, then setVar values
        (which last until the program's next scan brings a new row)."""
        row = self.current_row()
        if id(row) != self.overrides_row:
            self.overrides.clear()
            self.overrides_row = id(row)
        values: dict[str, Any] = {"BattV": self._battery(), "PTemp_C": self._panel(row)}
        for key, value in (row or {}).items():
            values[key] = value.isoformat() if hasattr(value, "isoformat") else value
        values.update(self.overrides)
        return values

    def _battery(self) -> float:
        """A steady, plausible 12 V battery, distinct per device."""
        return round(12.6 + (zlib.crc32(self.client_id.encode()) % 120) / 100, 2)

    @staticmethod
    def _panel(row: Mapping[str, Any] | None) -> float:
        """The panel sits near air temperature: the row's TA when it has one."""
        for key in ("TA", "TA_AVG", "TA_MEAN"):
            value = (row or {}).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                return round(float(value) + 1.5, 2)
        return 21.5

    # files ---------------------------------------------------------------------------------

    def drive(self, given: object) -> str | None:
        """The drive a command names (``USR`` or ``USR:``; CPU: when left out), or None."""
        if given is None or given == "":
            return CPU
        if not isinstance(given, str):
            return None
        return given if given.endswith(":") else f"{given}:"
