"""The COSMOS-UK database as this project knows it: five tables and 51 sites.

Facts copied from the team's reference notes so nothing reads ``../shared`` at run time. Column
lists of the four tables marked *inferred* are guesses; they live only here so that changing them
is a one-file edit. Table names used anywhere in SQL come from this module and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

SCHEMA = "COSMOS"
SITES_TABLE = "SITES"
SITE_ID = "SITE_ID"
DATE_TIME = "DATE_TIME"


class ColumnType(enum.Enum):
    STRING = "string"
    DATETIME = "datetime"
    INTEGER = "integer"
    FLOAT = "float"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


@dataclass(frozen=True)
class Table:
    """One COSMOS table. ``cadence`` is the logging interval; ``DATE_TIME`` ends each period."""

    name: str
    cadence: timedelta
    columns: tuple[Column, ...]
    legacy_name: str
    inferred: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def integer_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if c.type is ColumnType.INTEGER)

    @property
    def key_name(self) -> str:
        """The table's part of an S3 key: the name without its leading ``LEVEL1_``."""
        return self.name.removeprefix("LEVEL1_")

    @property
    def rows_per_day(self) -> int:
        return int(timedelta(days=1) / self.cadence)


def _columns(
    *,
    integers: frozenset[str] = frozenset(),
    strings: frozenset[str] = frozenset(),
    names: tuple[str, ...],
) -> tuple[Column, ...]:
    def kind(name: str) -> ColumnType:
        if name in integers:
            return ColumnType.INTEGER
        if name in strings:
            return ColumnType.STRING
        return ColumnType.FLOAT

    return (
        Column(SITE_ID, ColumnType.STRING),
        Column(DATE_TIME, ColumnType.DATETIME),
        *(Column(n, kind(n)) for n in names),
    )


_SOILMET_COLUMNS = (
    "WD",
    "WD_STD",
    "WS",
    "WS_STD",
    "PA",
    "PA_STD",
    "RH",
    "RH_STD",
    "TA",
    "TA_STD",
    "Q",
    "Q_STD",
    "SWIN",
    "SWIN_STD",
    "SWOUT",
    "SWOUT_STD",
    "LWIN_UNC",
    "LWIN_UNC_STD",
    "LWOUT_UNC",
    "LWOUT_UNC_STD",
    "LWIN",
    "LWIN_STD",
    "LWOUT",
    "LWOUT_STD",
    "TNR01C",
    "TNR01C_STD",
    "PRECIP",
    "PRECIP_DIAG",
    "SNOWD_DISTANCE_UNC",
    "SNOWD_SIGNALQUALITY",
    "CTS_MOD",
    "CTS_BARE",
    "CTS_MOD2",
    "CTS_SNOW",
    "PROFILE_VWC15",
    "PROFILE_SOILEC15",
    "PROFILE_VWC40",
    "PROFILE_SOILEC40",
    "PROFILE_VWC65",
    "PROFILE_SOILEC65",
    "TDT1_VWC",
    "TDT1_TSOIL",
    "TDT1_SOILPERM",
    "TDT1_SOILEC",
    "TDT2_VWC",
    "TDT2_TSOIL",
    "TDT2_SOILPERM",
    "TDT2_SOILEC",
    "STP_TSOIL50",
    "STP_TSOIL20",
    "STP_TSOIL10",
    "STP_TSOIL5",
    "STP_TSOIL2",
    "G1",
    "G1_STD",
    "G1_MV",
    "G1_CAL",
    "G2",
    "G2_STD",
    "G2_MV",
    "G2_CAL",
    "BATTV",
    "SCANS",
    "RECORD",
    "CTS_MOD_DIAG_1",
    "CTS_MOD_DIAG_2",
    "CTS_MOD_DIAG_3",
    "CTS_MOD_DIAG_4",
    "CTS_MOD_DIAG_5",
    "UX",
    "UZ",
    "UY",
    "STDEV_UX",
    "STDEV_UY",
    "STDEV_UZ",
    "COV_UX_UY",
    "COV_UX_UZ",
    "COV_UY_UZ",
    "CTS_SNOW_DIAG_1",
    "CTS_SNOW_DIAG_2",
    "CTS_SNOW_DIAG_3",
    "CTS_SNOW_DIAG_4",
    "CTS_SNOW_DIAG_5",
    "SNOWD_DISTANCE_COR",
    "WS_RES",
    "HS",
    "TAU",
    "U_STAR",
    "TS",
    "STDEV_TS",
    "COV_TS_UX",
    "COV_TS_UY",
    "COV_TS_UZ",
    "RHO_A_MEAN",
    "E_SAT_MEAN",
    "METPAK_SAMPLES",
    "CTS_MOD_RH",
    "CTS_MOD_TEMP",
    "TDT3_VWC",
    "TDT3_TSOIL",
    "TDT3_SOILEC",
    "TDT3_SOILPERM",
    "TDT4_VWC",
    "TDT4_TSOIL",
    "TDT4_SOILEC",
    "TDT4_SOILPERM",
    "TDT5_VWC",
    "TDT5_TSOIL",
    "TDT5_SOILEC",
    "TDT5_SOILPERM",
    "TDT6_VWC",
    "TDT6_TSOIL",
    "TDT6_SOILEC",
    "TDT6_SOILPERM",
    "TDT7_VWC",
    "TDT7_TSOIL",
    "TDT7_SOILEC",
    "TDT7_SOILPERM",
    "TDT8_VWC",
    "TDT8_TSOIL",
    "TDT8_SOILEC",
    "TDT8_SOILPERM",
    "TDT9_VWC",
    "TDT9_TSOIL",
    "TDT9_SOILEC",
    "TDT9_SOILPERM",
    "TDT10_VWC",
    "TDT10_TSOIL",
    "TDT10_SOILEC",
    "TDT10_SOILPERM",
    "CTS_SNOW_TEMP",
    "CTS_SNOW_RH",
    "CTS_MOD2_RH",
    "CTS_MOD2_TEMP",
    "SWIN_MULT",
    "SWOUT_MULT",
    "LWIN_MULT",
    "LWOUT_MULT",
    "PRECIP_TIPPING_A",
    "PRECIP_TIPPING_B",
    "PRECIP_TIPPING2",
    "TBR_TIP",
    "CTS_MOD_PERIOD",
    "CTS_MOD2_PERIOD",
    "CTS_SNOW_PERIOD",
    "WM_NAN_COUNT",
    "RH_INTERNAL",
)
_SOILMET_INTEGERS = frozenset(
    {
        "PRECIP_DIAG",
        "SNOWD_SIGNALQUALITY",
        "CTS_MOD",
        "CTS_BARE",
        "CTS_MOD2",
        "CTS_SNOW",
        "SCANS",
        "RECORD",
        "METPAK_SAMPLES",
        "CTS_MOD_PERIOD",
        "CTS_MOD2_PERIOD",
        "CTS_SNOW_PERIOD",
        "PRECIP_TIPPING_A",
        "PRECIP_TIPPING_B",
        "PRECIP_TIPPING2",
        "TBR_TIP",
        *(f"CTS_MOD_DIAG_{i}" for i in range(1, 6)),
        *(f"CTS_SNOW_DIAG_{i}" for i in range(1, 6)),
    }
)

SOILMET_30MIN = Table(
    name="LEVEL1_SOILMET_30MIN",
    cadence=timedelta(minutes=30),
    columns=_columns(integers=_SOILMET_INTEGERS, names=_SOILMET_COLUMNS),
    legacy_name="LEVEL_1_SOILMET_30MIN",
)
NMDB_1HOUR = Table(
    name="LEVEL1_NMDB_1HOUR",
    cadence=timedelta(hours=1),
    columns=_columns(
        integers=frozenset({"LENGTH_TIME_INTERVAL_S"}),
        strings=frozenset({"STATION"}),
        names=(
            "STATION",
            "LENGTH_TIME_INTERVAL_S",
            "MEASURED_UNCORRECTED",
            "MEASURED_CORR_FOR_EFFICIENCY",
            "MEASURED_CORR_FOR_PRESSURE",
            "MEASURED_PRESSURE_MBAR",
        ),
    ),
    legacy_name="LEVEL_1_NMDB_1HOUR",
    inferred=True,
)
PRECIP_1MIN = Table(
    name="LEVEL1_PRECIP_1MIN",
    cadence=timedelta(minutes=1),
    columns=_columns(
        names=(
            "P_INTENSITY_RT",
            "P_ACCUM_RT_NRT",
            "P_ACCUM_NRT",
            "P_ACCUM_TOTAL_NRT",
            "BUCKET_RT",
            "BUCKET_NRT",
            "LOAD_TEMP",
        ),
    ),
    legacy_name="LEVEL_1_PRECIP_1MIN",
    inferred=True,
)
PRECIP_RAINE_1MIN = Table(
    name="LEVEL1_PRECIP_RAINE_1MIN",
    cadence=timedelta(minutes=1),
    columns=_columns(
        integers=frozenset({"PRECIP_RAINE_DIAG"}),
        names=("PRECIP_RAINE", "PRECIP_RAINE_DIAG"),
    ),
    legacy_name="LEVEL_1_PRECIP_RAINE_1MIN",
    inferred=True,
)
STATUS_1HOUR = Table(
    name="COSMOS_STATUS_1HOUR",
    cadence=timedelta(hours=1),
    columns=_columns(
        integers=frozenset({"RECORD", "WATCHDOGERRORS", "SKIPPEDSCAN"}),
        strings=frozenset({"OSVERSION", "PROGNAME"}),
        names=(
            "RECORD",
            "BATTERY",
            "PANELTEMP",
            "LITHIUMBATTERY",
            "WATCHDOGERRORS",
            "SKIPPEDSCAN",
            "OSVERSION",
            "PROGNAME",
        ),
    ),
    legacy_name="COSMOS_STATUS_1HOUR",
    inferred=True,
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SOILMET_30MIN, NMDB_1HOUR, PRECIP_1MIN, PRECIP_RAINE_1MIN, STATUS_1HOUR)
}
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)
COLUMN_NAMES: frozenset[str] = frozenset(c for t in TABLES.values() for c in t.column_names)
"""Every column of every table. Code that names columns (the sample generator) checks its names
against this, so the catalogue stays the one source of column names."""


def check_column_names(names: Iterable[str], where: str) -> None:
    """Raise ``ValueError`` naming the columns that no catalogue table has."""
    unknown = sorted(set(names) - COLUMN_NAMES)
    if unknown:
        raise ValueError(f"{where} names columns the catalogue does not have: {unknown}")


TableName = enum.StrEnum("TableName", [(name, name) for name in TABLE_NAMES])  # type: ignore[misc]
"""The tables as an enum, so a launchpad offers them as a choice instead of free text; a member
is its name as a string, so code that takes a table name takes it as it is."""


class UnknownTableError(ValueError):
    pass


TableRef = Table | str
"""A table, or a name of it. Commands resolve a name once (``get_table``) and pass the
``Table`` down; the functions below them accept either, so a ``Table`` is never looked up again."""


def get_table(name: TableRef) -> Table:
    """Look a table up by its database name or the older tool's spelling, case-insensitively.

    A ``Table`` is returned as it is.
    """
    if isinstance(name, Table):
        return name
    wanted = name.strip().upper()
    for table in TABLES.values():
        if wanted in (table.name, table.legacy_name):
            return table
    raise UnknownTableError(
        f"unknown COSMOS table {name!r}: expected one of {', '.join(TABLE_NAMES)}"
    )


def get_tables(name: str) -> list[Table]:
    """One table (either spelling), or every table for ``all``, as the commands accept them."""
    if name.strip().lower() == "all":
        return list(TABLES.values())
    try:
        return [get_table(name)]
    except UnknownTableError as exc:
        raise UnknownTableError(f"{exc} (or 'all')") from None


def _utc(text: str) -> datetime:
    """COSMOS times are naive datetimes in GMT (Oracle DATE), and so are all of this project's."""
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Site:
    """A COSMOS-UK station. ``end`` is set only for the four closed sites."""

    site_id: str
    name: str
    latitude: float
    longitude: float
    start: datetime
    end: datetime | None

    def is_open_at(self, when: datetime) -> bool:
        return self.start <= when and (self.end is None or when < self.end)


# fmt: off
SITES: tuple[Site, ...] = (
    Site("ALIC1", "Alice Holt", 51.153551, -0.858232, _utc("2015-03-06T13:30"), None),
    Site("BALRD", "Balruddery", 56.482297, -3.1114881, _utc("2014-05-15T17:30"), None),
    Site("BICKL", "Bickley Hall", 53.02635, -2.7005297, _utc("2015-01-28T17:00"), None),
    Site("BUNNY", "Bunny Park", 52.86073, -1.12685, _utc("2015-01-27T00:30"), None),
    Site("CARDT", "Cardington", 52.105601, -0.424644, _utc("2015-06-24T10:00"), None),
    Site("CGARW", "Cwm Garw", 51.951295, -4.746634, _utc("2016-06-29T11:00"), None),
    Site("CHIMN", "Chimney Meadows", 51.708021, -1.4787658, _utc("2013-10-02T13:30"), None),
    Site("CHOBH", "Chobham Common", 51.367821, -0.597484, _utc("2015-02-24T14:00"), None),
    Site(
        "COCHN", "Cochno", 55.941421, -4.4035431, _utc("2017-08-23T00:00"), _utc("2020-11-16T00:00")
    ),
    Site("COCLP", "Cockle Park", 55.216013, -1.6943736, _utc("2014-11-21T14:30"), None),
    Site("CRICH", "Crichton", 55.043057, -3.583386, _utc("2014-12-02T15:00"), None),
    Site("EASTB", "Easter Bush", 55.867392, -3.207115, _utc("2014-08-13T11:30"), None),
    Site("ELMST", "Elmsett", 52.094647, 0.9930645, _utc("2016-08-11T15:30"), None),
    Site("EUSTN", "Euston", 52.383178, 0.7847112, _utc("2016-03-31T16:00"), None),
    Site("FINCH", "Fincham", 52.617773, 0.5107284, _utc("2017-06-07T11:30"), None),
    Site("FIVET", "Fivemiletown", 54.298468, -7.291954, _utc("2018-06-26T15:30"), None),
    Site("GISBN", "Gisburn Forest", 54.023711, -2.384689, _utc("2014-08-15T12:00"), None),
    Site("GLENS", "Glensaugh", 56.914403, -2.5621547, _utc("2014-05-14T11:30"), None),
    Site("GLENW", "Glenwherry", 54.838087, -6.0045994, _utc("2016-06-15T15:00"), None),
    Site("HADLW", "Hadlow", 51.228582, 0.320276, _utc("2016-10-27T14:30"), None),
    Site("HARTW", "Hartwood Home", 55.810254, -3.828995, _utc("2014-05-20T13:30"), None),
    Site(
        "HARWD",
        "Harwood Forest",
        55.216677,
        -2.025488,
        _utc("2015-05-22T12:00"),
        _utc("2022-06-28T09:00"),
    ),
    Site("HENFS", "Henfaes Farm", 53.225198, -4.01255, _utc("2015-12-17T13:00"), None),
    Site("HILLB", "Hillsborough", 54.446959, -6.068526, _utc("2016-06-14T17:00"), None),
    Site("HLACY", "Holme Lacy", 52.02088, -2.6621054, _utc("2018-04-11T00:00"), None),
    Site("HOLLN", "Hollin Hill", 54.110665, -0.959477, _utc("2014-03-25T12:30"), None),
    Site("HYBRY", "Heytesbury", 51.20277, -2.079616, _utc("2017-08-16T12:30"), None),
    Site("LIZRD", "The Lizard", 50.03266, -5.19999, _utc("2014-10-17T12:00"), None),
    Site("LODTN", "Loddington", 52.610159, -0.8264188, _utc("2016-04-26T15:00"), None),
    Site("LULLN", "Lullington Heath", 50.79372, 0.18887, _utc("2014-12-16T15:30"), None),
    Site("MOORH", "Moor House", 54.659417, -2.4678, _utc("2014-12-04T11:30"), None),
    Site("MOREM", "Moreton Morrell", 52.199407, -1.563081, _utc("2018-11-15T00:00"), None),
    Site("MORLY", "Morley", 52.548146, 1.0342313, _utc("2014-05-14T05:00"), None),
    Site("NWYKE", "North Wyke", 50.773479, -3.905963, _utc("2014-10-16T09:00"), None),
    Site("PLYNL", "Plynlimon", 52.453337, -3.762572, _utc("2014-11-05T12:30"), None),
    Site("PORTN", "Porton Down", 51.120071, -1.681482, _utc("2014-12-18T10:30"), None),
    Site("RDMER", "Redmere", 52.44577, 0.42104, _utc("2015-02-10T10:30"), _utc("2018-09-20T00:00")),
    Site("REDHL", "Redhill", 51.26287, 0.4291348, _utc("2016-02-18T16:00"), None),
    Site("RISEH", "Riseholme", 53.261647, -0.5259074, _utc("2016-05-04T16:00"), None),
    Site("ROTHD", "Rothamsted", 51.813787, -0.378304, _utc("2014-07-25T08:00"), None),
    Site("SHEEP", "Sheepdrove", 51.530244, -1.481903, _utc("2013-10-24T14:30"), None),
    Site("SOURH", "Sourhope", 55.479876, -2.229989, _utc("2014-11-19T11:00"), None),
    Site("SPENF", "Spen Farm", 53.86886, -1.31886, _utc("2016-11-23T10:00"), None),
    Site("STGHT", "Stoughton", 52.601667, -1.047046, _utc("2015-08-19T06:30"), None),
    Site("STIPS", "Stiperstones", 52.581248, -2.9446865, _utc("2014-11-06T15:00"), None),
    Site("SYDLG", "Sydling", 50.828373, -2.527891, _utc("2018-11-27T00:00"), None),
    Site("TADHM", "Tadham Moor", 51.207417, -2.82881, _utc("2014-10-14T12:00"), None),
    Site("WADDN", "Waddesdon", 51.839436, -0.948405, _utc("2013-11-04T18:30"), None),
    Site("WIMPL", "Wimpole", 52.132078, -0.044411, _utc("2019-09-10T00:00"), None),
    Site("WRTTL", "Writtle", 51.733896, 0.417923, _utc("2017-07-04T10:30"), None),
    Site(
        "WYTH1",
        "Wytham Woods",
        51.77728,
        -1.33846,
        _utc("2013-11-26T00:30"),
        _utc("2016-10-01T00:00"),
    ),
)
# fmt: on
SITE_IDS: tuple[str, ...] = tuple(s.site_id for s in SITES)
SITES_BY_ID: dict[str, Site] = {s.site_id: s for s in SITES}


class UnknownSiteError(ValueError):
    pass


def get_site(site_id: str) -> Site:
    try:
        return SITES_BY_ID[site_id.strip().upper()]
    except KeyError:
        raise UnknownSiteError(
            f"unknown COSMOS site {site_id!r}: site IDs are 5 characters such as ALIC1 or BALRD"
        ) from None
