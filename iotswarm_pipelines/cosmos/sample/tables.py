"""One UTC day of one COSMOS table at one site, as columns: the physics turned into rows.

A ``Block`` holds the day's surviving periods (gaps already removed) and one column per catalogue
column (after SITE_ID and DATE_TIME): a float array with NaN for NULL, an int array, or one
constant. Blocks are cached, so follow mode, which asks for a few minutes at a time, computes each
day once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.sample import physics as ph
from iotswarm_pipelines.cosmos.sample.profiles import SENSOR_GROUPS, SiteProfile, profile

NULL_CHANCE = 0.0005  # a single value missing
DROP_CHANCE = 0.0005  # a single row missing
OUTAGES_PER_DAY = 0.06  # logger or telemetry outages (a run of missing rows)
WM_SENTINEL = 99999.99999
_NEVER_NULL = frozenset(
    {
        "RECORD",
        "SCANS",
        "STATION",
        "LENGTH_TIME_INTERVAL_S",
        "OSVERSION",
        "PROGNAME",
        "WM_NAN_COUNT",
    }
)
_DECIMALS = {
    "WD": 1,
    "RH": 2,
    "TA": 2,
    "PRECIP": 2,
    "BATTV": 2,
    "BATTERY": 2,
    "LITHIUMBATTERY": 3,
    "CTS_MOD_TEMP": 1,
    "CTS_MOD_RH": 1,
    "G1": 5,
    "G2": 5,
    "G1_MV": 5,
    "G2_MV": 5,
    "G1_STD": 5,
    "G2_STD": 5,
    "WM_NAN_COUNT": 5,
    "SWOUT_MULT": 4,
    "LWIN_MULT": 4,
    "LWOUT_MULT": 4,
}

Column = np.ndarray | int | float | str | None

catalogue.check_column_names(
    [*_NEVER_NULL, *_DECIMALS, *(c for group in SENSOR_GROUPS.values() for c in group)],
    "the sample generator",
)


@dataclass(frozen=True)
class Block:
    minutes: np.ndarray  # period ends (minutes since physics.EPOCH), ascending
    columns: tuple[Column, ...]  # catalogue order, after SITE_ID and DATE_TIME

    def span(self, after: int, until: int) -> slice:
        """Positions of the rows with after < DATE_TIME <= until."""
        lo = int(np.searchsorted(self.minutes, after, side="right"))
        hi = int(np.searchsorted(self.minutes, until, side="right"))
        return slice(lo, hi)


def column_values(value: Column, rows: slice, n: int, integer: bool) -> list[Any]:
    """Python values for the DB driver: None for NULL, int for integer columns."""
    if not isinstance(value, np.ndarray):
        return [value] * n
    part = value[rows]
    values = part.tolist()
    if part.dtype.kind != "f":
        return values
    if integer:
        return [None if v != v else int(v) for v in values]
    if np.isnan(part).any():
        return [None if v != v else v for v in values]
    return values


def _keep_after_outages(seed: int, site_id: str, day: int, minutes: np.ndarray) -> np.ndarray:
    r = ph.rng(seed, site_id, "outage", day)
    keep = np.ones(minutes.shape, dtype=bool)
    n = int(r.poisson(OUTAGES_PER_DAY))
    starts = day * ph.MINUTES_PER_DAY + r.integers(0, ph.MINUTES_PER_DAY, n)
    durations = np.clip(r.exponential(120.0, n), 10, 720).astype(np.int64)
    for start, duration in zip(starts, durations, strict=True):
        keep &= ~((minutes > start) & (minutes <= start + duration))
    return keep


def _first_end(site: catalogue.Site, cadence: int) -> int:
    """End of the first whole period after the site started."""
    return -(-ph.to_minutes(site.start) // cadence) * cadence + cadence


def _records(site: catalogue.Site, minutes: np.ndarray, cadence: int) -> np.ndarray:
    """Logger record numbers: +1 per period since the site started, gaps included."""
    return (minutes - _first_end(site, cadence)) // cadence + 1


def _finish(
    seed: int,
    table: catalogue.Table,
    prof: SiteProfile,
    day: int,
    minutes: np.ndarray,
    values: dict[str, Any],
    r: np.random.Generator,
    *,
    outages: bool = True,
) -> Block:
    """Lacking groups to NULL, rounding, scattered NULLs, dropped rows, closed/unopened days."""
    n = len(minutes)
    keep = r.random(n) >= DROP_CHANCE
    if outages:
        keep &= _keep_after_outages(seed, prof.site_id, day, minutes)
    site = prof.site
    keep &= minutes >= _first_end(site, int(table.cadence.total_seconds() // 60))
    if site.end is not None:
        keep &= minutes <= ph.to_minutes(site.end)
    extra = values.keys() - set(table.column_names)
    if extra:
        raise ValueError(f"the sample generator makes {sorted(extra)}, not in {table.name}")
    lacking = {c for g in set(SENSOR_GROUPS) - prof.groups for c in SENSOR_GROUPS[g]}
    integers = table.integer_columns
    columns: list[Column] = []
    for name in table.column_names[2:]:
        value = None if name in lacking else values[name]
        if isinstance(value, np.ndarray):
            if name in integers:
                value = np.rint(value)
            elif value.dtype.kind == "f":
                value = np.round(value, _DECIMALS.get(name, 3))
            if name not in _NEVER_NULL:
                holes = r.random(n) < NULL_CHANCE
                if holes.any():
                    value = np.where(holes, np.nan, value.astype(float))
            if name in integers and not np.isnan(value).any():
                value = value.astype(np.int64)
            value = value[keep]
        columns.append(value)
    return Block(minutes=minutes[keep], columns=tuple(columns))


def _soilmet(seed: int, prof: SiteProfile, day: int, r: np.random.Generator) -> dict[str, Any]:
    w = ph.weather(seed, prof, day)
    n = len(w.minutes)
    mid = w.minutes - 15
    sun = np.clip(w.swin, 0.0, None)
    temps = ph.soil_temperatures(seed, prof, day)
    vwc1 = ph.soil_moisture(seed, prof, day, 3.0)
    vwc2 = ph.soil_moisture(seed, prof, day, 7.0)
    q = ph.absolute_humidity(w.ta, w.rh)
    rho = w.pa * 100.0 / (287.05 * (w.ta + 273.15))
    wet_share = (vwc1 - prof.theta_dry) / (prof.theta_wet - prof.theta_dry)
    counts = ph.expected_neutrons(
        prof, 0.6 * vwc1 + 0.4 * vwc2, w.pa, q, ph.nmdb_intensity(seed, mid)
    )
    tnr = w.ta - 0.1 + r.normal(0.0, 0.15, n)
    body = ph.SIGMA * (tnr + 273.15) ** 4
    lwin = np.clip(
        (0.74 + 0.22 * w.cloud) * ph.SIGMA * (w.ta + 273.15) ** 4 + r.normal(0, 2.0, n), 200, 450
    )
    surface = w.ta + 0.008 * sun - 1.2 * (1.0 - w.cloud)
    lwout = np.clip(0.98 * ph.SIGMA * (surface + 273.15) ** 4 + 0.02 * lwin, 250, 500)
    swout = np.clip(prof.albedo * sun + r.uniform(0.3, 1.8, n), 0.0, 300.0)
    g = np.clip(0.11 * w.swin_lag - 4.0 - 3.0 * (1.0 - w.cloud) + r.normal(0, 0.5, n), -60, 120)
    wd = np.radians(w.wd)
    u_star = 0.09 * w.ws + r.uniform(0.0, 0.03, n)
    hs = 0.28 * w.swin_lag - 12.0 * (1.0 - w.cloud) + r.normal(0, 5.0, n)
    swin_mult, swout_mult, lwin_mult, lwout_mult, g1_cal, g2_cal = prof.calibrations
    v: dict[str, Any] = {
        "WD": w.wd,
        "WD_STD": np.clip(12.0 + 25.0 / (w.ws + 0.6) + r.normal(0, 4.0, n), 2.0, 100.0),
        "WS": w.ws,
        "WS_STD": w.ws * r.uniform(0.3, 0.6, n),
        "WS_RES": w.ws * r.uniform(0.85, 0.98, n),
        "PA": w.pa,
        "PA_STD": r.uniform(0.02, 0.08, n),
        "RH": w.rh,
        "RH_STD": r.uniform(0.2, 1.2, n),
        "TA": w.ta,
        "TA_STD": 0.05 + 0.0006 * sun + r.uniform(0.0, 0.25, n),
        "Q": q,
        "Q_STD": r.uniform(0.03, 0.2, n),
        "SWIN": np.clip(w.swin + r.normal(0.0, 0.3, n), -5.0, 1000.0),
        "SWIN_STD": 0.2 + sun * r.uniform(0.01, 0.2, n),
        "SWOUT": swout,
        "SWOUT_STD": 0.1 + swout * r.uniform(0.01, 0.15, n),
        "LWIN": lwin,
        "LWIN_STD": r.uniform(0.5, 4.0, n),
        "LWOUT": lwout,
        "LWOUT_STD": r.uniform(0.1, 2.0, n),
        "LWIN_UNC": lwin - body,
        "LWIN_UNC_STD": r.uniform(0.5, 4.0, n),
        "LWOUT_UNC": lwout - body,
        "LWOUT_UNC_STD": r.uniform(0.1, 1.2, n),
        "TNR01C": tnr,
        "TNR01C_STD": r.uniform(0.02, 0.4, n),
        "PRECIP": w.rain,
        "PRECIP_DIAG": np.zeros(n),
        "SNOWD_DISTANCE_UNC": 1.6 + r.normal(0, 0.004, n),
        "SNOWD_SIGNALQUALITY": r.integers(160, 210, n).astype(float),
        "CTS_MOD": r.poisson(counts).astype(float),
        "CTS_BARE": r.poisson(0.14 * counts).astype(float),
        "CTS_MOD2": r.poisson(0.97 * counts).astype(float),
        "CTS_SNOW": r.poisson(0.45 * counts).astype(float),
        "RECORD": _records(prof.site, w.minutes, 30),
        "SCANS": np.full(n, 180),
        "BATTV": np.clip(ph.battery_volts(w) + r.normal(0, 0.02, n), 11.8, 14.5),
        "RHO_A_MEAN": rho,
        "E_SAT_MEAN": ph.saturation_vapour_hpa(w.ta) / 10.0,
        "METPAK_SAMPLES": np.full(n, 1800) - r.integers(0, 3, n),
        "CTS_MOD_RH": np.clip(2.0 + r.normal(0, 0.3, n), 0.5, 10.0),
        "CTS_MOD_TEMP": w.ta + 5.5 + 0.004 * w.swin_lag,
        "CTS_SNOW_TEMP": w.ta + 2.5 + r.normal(0, 0.2, n),
        "CTS_SNOW_RH": r.uniform(5.0, 25.0, n),
        "CTS_MOD2_RH": np.clip(2.5 + r.normal(0, 0.3, n), 0.5, 10.0),
        "CTS_MOD2_TEMP": w.ta + 5.0 + 0.004 * w.swin_lag,
        "SWIN_MULT": swin_mult,
        "SWOUT_MULT": swout_mult,
        "LWIN_MULT": lwin_mult,
        "LWOUT_MULT": lwout_mult,
        "CTS_MOD_PERIOD": np.where(r.random(n) < 0.3, 1799, 1800),
        "CTS_MOD2_PERIOD": np.where(r.random(n) < 0.3, 1799, 1800),
        "CTS_SNOW_PERIOD": np.full(n, 1800),
        "WM_NAN_COUNT": (
            np.full(n, WM_SENTINEL)
            if prof.wm_sentinel
            else np.where(r.random(n) < 0.01, r.integers(1, 6, n), 0).astype(float)
        ),
        "RH_INTERNAL": r.uniform(5.0, 20.0, n),
        "UX": -w.ws * np.sin(wd),
        "UY": -w.ws * np.cos(wd),
        "UZ": r.normal(0.0, 0.03, n),
        "STDEV_UX": 0.45 * w.ws * r.uniform(0.8, 1.2, n),
        "STDEV_UY": 0.45 * w.ws * r.uniform(0.8, 1.2, n),
        "STDEV_UZ": 0.2 * w.ws * r.uniform(0.8, 1.2, n),
        "COV_UX_UY": r.normal(0.0, 0.05, n) * w.ws**2,
        "COV_UX_UZ": -(u_star**2),
        "COV_UY_UZ": r.normal(0.0, 0.02, n) * w.ws,
        "HS": hs,
        "TAU": rho * u_star**2,
        "U_STAR": u_star,
        "TS": w.ta + 0.4 + r.normal(0, 0.1, n),
        "STDEV_TS": 0.1 + 0.001 * sun,
        "COV_TS_UX": r.normal(0, 0.02, n),
        "COV_TS_UY": r.normal(0, 0.02, n),
        "COV_TS_UZ": hs / (rho * 1005.0),
        "PRECIP_TIPPING_A": np.floor(w.rain / 0.2),
        "PRECIP_TIPPING_B": np.floor(w.rain * prof.gauge_factor / 0.2),
        "PRECIP_TIPPING2": np.floor(w.rain * 0.98 / 0.2),
        "TBR_TIP": np.floor(w.rain / 0.2),
    }
    v["SNOWD_DISTANCE_COR"] = v["SNOWD_DISTANCE_UNC"] * np.sqrt((w.ta + 273.15) / 273.15)
    for i in range(1, 6):
        v[f"CTS_MOD_DIAG_{i}"] = np.zeros(n)
        v[f"CTS_SNOW_DIAG_{i}"] = np.zeros(n)
    for depth, tau in ((15, 4.0), (40, 9.0), (65, 16.0)):
        if prof.lacks("profile"):
            v[f"PROFILE_VWC{depth}"] = v[f"PROFILE_SOILEC{depth}"] = None
            continue
        vwc = ph.soil_moisture(seed, prof, day, tau)
        v[f"PROFILE_VWC{depth}"] = vwc + r.normal(0, 0.1, n)
        v[f"PROFILE_SOILEC{depth}"] = 0.1 + 0.4 * wet_share + r.normal(0, 0.02, n)
    for depth in ph.SOIL_DEPTHS_CM:
        if depth != 30:
            v[f"STP_TSOIL{depth}"] = np.clip(temps[depth] + r.normal(0, 0.01, n), -3.0, 25.0)
    for number, (g_value, cal) in enumerate(((g, g1_cal), (0.95 * g, g2_cal)), start=1):
        flux = g_value * (1.0 + r.normal(0, 0.05, n))
        v[f"G{number}"] = flux
        v[f"G{number}_CAL"] = cal
        v[f"G{number}_MV"] = flux / cal
        v[f"G{number}_STD"] = r.uniform(0.1, 0.9, n)
    tdt_layers: tuple[tuple[float, int], ...] = (
        (3.0, 10),
        (7.0, 30),
        (2.0, 5),
        (4.0, 10),
        (5.0, 20),
        (8.0, 30),
        (10.0, 50),
    )
    tdt_layers += ((12.0, 50), (6.0, 20), (3.0, 40))
    for number, (tau, depth) in enumerate(tdt_layers, start=1):
        if number > 2 and prof.lacks("tdt_extra"):
            for part in ("VWC", "TSOIL", "SOILPERM", "SOILEC"):
                v[f"TDT{number}_{part}"] = None
            continue
        vwc = ph.soil_moisture(seed, prof, day, tau) + r.normal(0, 0.1, n)
        share = (vwc - prof.theta_dry) / (prof.theta_wet - prof.theta_dry)
        v[f"TDT{number}_VWC"] = vwc
        tsoil = ph.soil_temperature_at(temps, depth) + r.normal(0, 0.01, n)
        v[f"TDT{number}_TSOIL"] = np.clip(tsoil, -3.0, 25.0)
        v[f"TDT{number}_SOILPERM"] = ph.permittivity(vwc)
        v[f"TDT{number}_SOILEC"] = np.clip(0.15 + 0.5 * share + r.normal(0, 0.02, n), 0.0, 2.0)
    return v


def _nmdb(seed: int, prof: SiteProfile, day: int, r: np.random.Generator) -> dict[str, Any]:
    """The Jungfraujoch monitor's hour: the same values for every site (keyed by the station)."""
    ends = ph.period_ends(day, 60)
    station = ph.rng(seed, ph.NEUTRON_MONITOR, "nmdb", day)
    n = len(ends)
    corrected = ph.nmdb_intensity(seed, ends - 30) + station.normal(0.0, 0.25, n)
    pressure = ph.nmdb_pressure(seed, ends - 30)
    uncorrected = corrected * np.exp(-0.0072 * (pressure - 652.0))
    return {
        "STATION": ph.NEUTRON_MONITOR,
        "LENGTH_TIME_INTERVAL_S": 3600,
        "MEASURED_UNCORRECTED": uncorrected,
        "MEASURED_CORR_FOR_EFFICIENCY": uncorrected * 1.002,
        "MEASURED_CORR_FOR_PRESSURE": corrected,
        "MEASURED_PRESSURE_MBAR": pressure,
    }


def _precip(seed: int, prof: SiteProfile, day: int, r: np.random.Generator) -> dict[str, Any]:
    site_id = prof.site_id
    ends = ph.period_ends(day, 1)
    rain = ph.rain_minutes(seed, site_id, day)
    before = ph.rain_minutes(seed, site_id, day - 1)[-5:]
    delayed = np.concatenate([before, rain[:-5]])  # the non-real-time output lags by 5 min
    emptied = ph.bucket_emptied_before(prof.bucket_phase_days, day * ph.MINUTES_PER_DAY)
    collected = ph.rain_since(seed, site_id, day, emptied)
    visit = emptied + ph.BUCKET_DAYS * ph.MINUTES_PER_DAY
    if visit <= ends[-1]:
        after_visit = ends >= visit
        collected = np.where(after_visit, collected - collected[ends == visit][0], collected)
    bucket = 45.0 + collected
    running = np.cumsum(np.concatenate([before, rain]))
    last5 = running[5:] - running[:-5]
    w = ph.weather(seed, prof, day)
    previous = ph.weather(seed, prof, day - 1)
    air = np.interp(
        ends, np.append(previous.minutes[-1], w.minutes), np.append(previous.ta[-1], w.ta)
    )
    return {
        "P_INTENSITY_RT": rain,
        "P_ACCUM_RT_NRT": np.round(rain, 2),
        "P_ACCUM_NRT": np.round(delayed, 2),
        "P_ACCUM_TOTAL_NRT": np.clip(collected - last5, 0.0, None),
        "BUCKET_RT": bucket,
        "BUCKET_NRT": np.clip(bucket - last5, 45.0, None),
        "LOAD_TEMP": air + 0.8 + r.normal(0.0, 0.05, len(ends)),
    }


def _raine(seed: int, prof: SiteProfile, day: int, r: np.random.Generator) -> dict[str, Any]:
    rain = ph.rain_minutes(seed, prof.site_id, day)
    n = len(rain)
    jitter = np.where(rain > 0.0, r.normal(0.0, 0.004, n), 0.0)
    return {
        "PRECIP_RAINE": np.clip(rain * prof.gauge_factor + jitter, 0.0, 3.0),
        "PRECIP_RAINE_DIAG": np.where(r.random(n) < 0.002, r.integers(1, 4, n), 0),
    }


def _status(seed: int, prof: SiteProfile, day: int, r: np.random.Generator) -> dict[str, Any]:
    w = ph.weather(seed, prof, day)
    hours = w.minutes[1::2]
    n = len(hours)
    years = (hours - ph.to_minutes(prof.site.start)) / (365.25 * ph.MINUTES_PER_DAY)
    return {
        "RECORD": _records(prof.site, hours, 60),
        "BATTERY": np.clip(ph.battery_volts(w)[1::2] + r.normal(0, 0.02, n), 11.8, 14.5),
        "PANELTEMP": w.ta[1::2] + 1.5 + 0.008 * np.clip(w.swin[1::2], 0, None),
        # The lithium cell is replaced every five years on a service visit.
        "LITHIUMBATTERY": np.clip(3.65 - 0.1 * (years % 5.0) + r.normal(0, 0.005, n), 3.0, 3.7),
        "WATCHDOGERRORS": np.where(r.random(n) < 0.002, 1, 0),
        "SKIPPEDSCAN": np.where(r.random(n) < 0.01, r.integers(1, 4, n), 0),
        "OSVERSION": prof.os_version,
        "PROGNAME": f"CPU:COSMOS_{prof.site_id}.CR1X",
    }


_BUILDERS: dict[str, tuple[Callable[..., dict[str, Any]], int]] = {
    catalogue.SOILMET_30MIN.name: (_soilmet, 30),
    catalogue.NMDB_1HOUR.name: (_nmdb, 60),
    catalogue.PRECIP_1MIN.name: (_precip, 1),
    catalogue.PRECIP_RAINE_1MIN.name: (_raine, 1),
    catalogue.STATUS_1HOUR.name: (_status, 60),
}
_EMPTY = np.zeros(0, dtype=np.int64)


def has_table(site_id: str, table_name: str) -> bool:
    """Whether a site logs a table at all (only some sites have a rain[e] gauge)."""
    return table_name != catalogue.PRECIP_RAINE_1MIN.name or profile(site_id).has_raine


@lru_cache(maxsize=600)
def block(seed: int, table_name: str, site_id: str, day: int) -> Block:
    """All rows of one table for one site and UTC day (periods ending in (day, day+1])."""
    table = catalogue.TABLES[table_name]
    prof = profile(site_id)
    if not has_table(site_id, table_name):
        return Block(minutes=_EMPTY, columns=(None,) * (len(table.columns) - 2))
    build, cadence = _BUILDERS[table_name]
    r = ph.rng(seed, site_id, table_name, day)
    values = build(seed, prof, day, r)
    return _finish(
        seed,
        table,
        prof,
        day,
        ph.period_ends(day, cadence),
        values,
        r,
        outages=table_name != catalogue.NMDB_1HOUR.name,
    )


def clear_caches() -> None:
    """Forget every cached day (tests use it to prove rows do not depend on the cache)."""
    block.cache_clear()
    ph.clear_caches()
