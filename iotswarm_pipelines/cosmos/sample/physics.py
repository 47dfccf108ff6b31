"""Pure weather and soil models for the sample database, one UTC day of one site at a time.

Every value is a function of (seed, site, absolute time) only. Random numbers come from a
generator keyed by the seed, the site (or ``UK`` for weather shared by all sites), a stream name
and the UTC day, and every model is computed on whole days with a fixed look-back. So a row never
depends on the requested range, on chunking, or on which other sites are generated, and follow
mode continues exactly where a previous run stopped.

Time is counted in whole minutes since ``EPOCH``; a period is named by the minute it ends.
Lagged processes (temperature after radiation, soil temperature with depth, soil water after
rain) are first-order recursions run over a fixed look-back window that ends with the day.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import accumulate

import numpy as np

from iotswarm_pipelines.cosmos.sample.profiles import SiteProfile

EPOCH = datetime(2000, 1, 1)
MINUTES_PER_DAY = 1440
HALF_HOURS = 48
NATIONAL = "UK"  # key of the weather shared by every site (synoptic pressure, wet regimes)
NEUTRON_MONITOR = "JUNG"  # the NMDB station COSMOS-UK corrects its counts with
NMDB_REFERENCE = 165.0  # Jungfraujoch counts per second, the reference intensity
SOIL_DEPTHS_CM = (2, 5, 10, 20, 30, 50)
_SOIL_TAU_HALF_HOURS = {2: 2.0, 5: 4.0, 10: 8.0, 20: 24.0, 30: 48.0, 50: 120.0}
_SOIL_SEASON_WEIGHT = {2: 0.0, 5: 0.02, 10: 0.05, 20: 0.12, 30: 0.2, 50: 0.35}
_SOIL_LOOKBACK_DAYS = 4
_WATER_LOOKBACK_DAYS = 15
SIGMA = 5.670374419e-8
BUCKET_DAYS = 14  # the Pluvio bucket is emptied on a fortnightly site visit


def to_minutes(when: datetime) -> int:
    return (when - EPOCH) // timedelta(minutes=1)


def from_minutes(minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=int(minutes))


def _key(part: str | int) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    return part & 0xFFFF_FFFF_FFFF_FFFF


def rng(seed: int, *key: str | int) -> np.random.Generator:
    """The random stream for one (seed, site, stream, day): independent of everything else."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *map(_key, key)])))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# Every smooth-noise stream as (name, knot spacing in minutes). One random draw per (key, day)
# gives the knots of all of them, so a new stream must be added here (at the end, to keep the
# existing ones unchanged).
_STREAMS = (
    ("regime", 720),
    ("regime", 360),
    ("cloud", 180),
    ("temperature", 720),
    ("temperature", 360),
    ("dryness", 360),
    ("pressure", 720),
    ("pressure-slow", 1440),
    ("pressure", 180),
    ("wind", 360),
    ("wind", 120),
    ("direction", 720),
    ("direction", 180),
    ("drift", 1440),
    ("wiggle", 180),
)
_KNOT_COUNTS = [MINUTES_PER_DAY // k for _, k in _STREAMS]
_STREAM_OFFSETS = dict(zip(_STREAMS, accumulate(_KNOT_COUNTS, initial=0), strict=False))
_KNOTS_PER_DAY = sum(_KNOT_COUNTS)


@lru_cache(maxsize=16384)
def _knots(seed: int, key: str, day: int) -> np.ndarray:
    return _frozen(rng(seed, key, "knots", day).standard_normal(_KNOTS_PER_DAY))


def noise(seed: int, key: str, stream: str, minutes: np.ndarray, knot_minutes: int) -> np.ndarray:
    """Smooth unit-variance-ish noise: daily-seeded random knots, smoothstep in between."""
    per_day = MINUTES_PER_DAY // knot_minutes
    offset = _STREAM_OFFSETS[(stream, knot_minutes)]
    k0 = minutes // knot_minutes
    frac = (minutes - k0 * knot_minutes) / knot_minutes
    first, last = int(k0.min()) // per_day, (int(k0.max()) + 1) // per_day
    knots = np.concatenate(
        [_knots(seed, key, d)[offset : offset + per_day] for d in range(first, last + 1)]
    )
    base = first * per_day
    a, b = knots[k0 - base], knots[k0 + 1 - base]
    w = frac * frac * (3.0 - 2.0 * frac)
    return a + (b - a) * w


def day_of_year(minutes: np.ndarray) -> np.ndarray:
    return (minutes / MINUTES_PER_DAY) % 365.2422


def sin_sun_elevation(lat: float, lon: float, minutes: np.ndarray) -> np.ndarray:
    """Sine of the solar elevation (declination and equation-of-time approximations)."""
    doy = day_of_year(minutes)
    b = 2 * np.pi * (doy - 81.0) / 364.0
    declination = np.radians(23.44) * np.sin(2 * np.pi * (doy - 81.0) / 365.2422)
    eot = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    solar_hours = (minutes % MINUTES_PER_DAY) / 60.0 + lon / 15.0 + eot / 60.0
    hour_angle = np.radians(15.0 * (solar_hours - 12.0))
    phi = np.radians(lat)
    return np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.cos(
        hour_angle
    )


def season_temperature(profile: SiteProfile, minutes: np.ndarray) -> np.ndarray:
    doy = day_of_year(minutes)
    lat = profile.site.latitude
    return (
        9.0
        - 0.55 * (lat - 52.0)
        + profile.temp_offset
        + 4.8 * np.cos(2 * np.pi * (doy - 200.0) / 365.2422)
    )


def saturation_vapour_hpa(t_c: np.ndarray) -> np.ndarray:
    return 6.112 * np.exp(17.62 * t_c / (243.12 + t_c))


def ema(values: np.ndarray, tau_steps: float, start: float | None = None) -> np.ndarray:
    """First-order lag (time constant ``tau_steps``), run sequentially so it is bit-stable."""
    a = float(np.exp(-1.0 / tau_steps))
    seq = values.tolist()
    first = seq[0] if start is None else start
    out = list(accumulate(seq, lambda y, x: a * y + (1.0 - a) * x, initial=first))[1:]
    return np.asarray(out)


def storage(rain: np.ndarray, tau_steps: float) -> np.ndarray:
    """Water stored in a soil layer (mm): rain in, exponential drainage and evaporation out.

    S[i] = a S[i-1] + rain[i] with S[-1] = 0, written as a scaled running sum (sequential, so
    bit-stable); the scale a**-i stays small because windows are a few time constants long.
    """
    steps = np.arange(len(rain))
    return np.exp(-steps / tau_steps) * np.cumsum(rain * np.exp(steps / tau_steps))


def period_ends(day: int, cadence_minutes: int) -> np.ndarray:
    """Minute stamps of the periods ending in (day 00:00, day+1 00:00]."""
    start = day * MINUTES_PER_DAY
    return np.arange(start + cadence_minutes, start + MINUTES_PER_DAY + 1, cadence_minutes)


# --- rain ---------------------------------------------------------------------------------


def wetness(seed: int, site_id: str, minutes: np.ndarray) -> np.ndarray:
    """Weather regime (> 0 wet): national fronts plus a local part, wetter in winter."""
    regime = 0.75 * noise(seed, NATIONAL, "regime", minutes, 720) + 0.5 * noise(
        seed, site_id, "regime", minutes, 360
    )
    return regime + 0.2 * np.cos(2 * np.pi * (day_of_year(minutes) - 15.0) / 365.2422)


@lru_cache(maxsize=4096)
def _rain_events(seed: int, site_id: str, day: int) -> tuple[np.ndarray, ...]:
    """Rain events starting on a day: a Poisson process whose rate follows the wet regime."""
    midday = np.array([day * MINUTES_PER_DAY + 720])
    rate = 0.9 * float(np.exp(1.1 * wetness(seed, site_id, midday)[0]))
    r = rng(seed, site_id, "rain", day)
    n = int(r.poisson(rate))
    starts = r.integers(0, MINUTES_PER_DAY, n)
    durations = np.clip(r.lognormal(np.log(45.0), 0.8, n), 5, 720).astype(np.int64)
    peaks = r.gamma(0.9, 0.05, n)
    jitter = r.lognormal(0.0, 0.35, int(durations.sum()))
    return starts, durations, peaks, jitter


@lru_cache(maxsize=1024)
def rain_minutes(seed: int, site_id: str, day: int) -> np.ndarray:
    """Rain (mm) in each minute ending in (day, day+1]; events may spill over midnight."""
    out = np.zeros(MINUTES_PER_DAY)
    for event_day in (day - 1, day):
        starts, durations, peaks, jitter = _rain_events(seed, site_id, event_day)
        offset = 0
        for start, duration, peak in zip(starts, durations, peaks, strict=True):
            k = np.arange(duration)
            amount = (
                peak * np.sin(np.pi * (k + 0.5) / duration) * jitter[offset : offset + duration]
            )
            offset += duration
            index = start + k + (event_day - day) * MINUTES_PER_DAY
            inside = (index >= 0) & (index < MINUTES_PER_DAY)
            np.add.at(out, index[inside], amount[inside])
    return _frozen(np.minimum(out, 3.0))


@lru_cache(maxsize=8192)
def rain_half_hours(seed: int, site_id: str, day: int) -> np.ndarray:
    return _frozen(rain_minutes(seed, site_id, day).reshape(HALF_HOURS, 30).sum(axis=1))


@lru_cache(maxsize=8192)
def rain_total(seed: int, site_id: str, day: int) -> float:
    return float(rain_minutes(seed, site_id, day).sum())


def rain_since(seed: int, site_id: str, day: int, since_minute: int) -> np.ndarray:
    """Cumulative rain from ``since_minute`` to the end of each minute of ``day``."""
    first_day = since_minute // MINUTES_PER_DAY
    before = 0.0
    if first_day < day:
        head = rain_minutes(seed, site_id, first_day)
        before = float(head[since_minute - first_day * MINUTES_PER_DAY :].sum())
        before += sum(rain_total(seed, site_id, d) for d in range(first_day + 1, day))
        today = rain_minutes(seed, site_id, day)
    else:
        today = rain_minutes(seed, site_id, day).copy()
        today[: since_minute - day * MINUTES_PER_DAY] = 0.0
    return before + np.cumsum(today)


# --- weather at 30-minute resolution ------------------------------------------------------


@dataclass(frozen=True)
class Weather:
    """Half-hourly period means for the 48 periods ending in (day, day+1]."""

    minutes: np.ndarray
    rain: np.ndarray  # mm per 30 min
    cloud: np.ndarray  # 0..1
    swin: np.ndarray  # W m-2
    ta: np.ndarray  # degC
    rh: np.ndarray  # %
    pa: np.ndarray  # hPa
    ws: np.ndarray  # m/s
    wd: np.ndarray  # degrees
    swin_lag: np.ndarray  # radiation felt by slow things (soil surface, battery)


@lru_cache(maxsize=8192)
def _sky(seed: int, profile: SiteProfile, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud cover and incoming short-wave radiation for a day."""
    site = profile.site
    ends = period_ends(day, 30)
    mid = ends - 15
    rain = rain_half_hours(seed, site.site_id, day)
    cloud_drive = 1.6 * wetness(seed, site.site_id, mid) + 0.8 * noise(
        seed, site.site_id, "cloud", mid, 180
    )
    cloud = 1.0 / (1.0 + np.exp(-(cloud_drive + 0.3)))
    cloud = np.where(rain > 0.05, np.maximum(cloud, 0.95), cloud)
    sin_el = sin_sun_elevation(site.latitude, site.longitude, mid)
    clear = 1361.0 * 0.76 * np.power(np.clip(sin_el, 0.0, None), 1.15)
    night_offset = -(1.0 + 3.5 * (1.0 - cloud))
    swin = np.where(sin_el > 0, clear * (1.0 - 0.75 * cloud**3.4), 0.0) + night_offset
    return _frozen(cloud), _frozen(swin)


@lru_cache(maxsize=8192)
def weather(seed: int, profile: SiteProfile, day: int) -> Weather:
    site_id = profile.site_id
    ends = period_ends(day, 30)
    mid = ends - 15
    cloud, swin = _sky(seed, profile, day)
    _, prev_swin = _sky(seed, profile, day - 1)
    # Air warms after the sun with a ~2.5 h lag; clear nights cool.
    swin_warm = ema(np.concatenate([prev_swin, swin]), 5.0)[HALF_HOURS:]
    swin_lag = ema(np.concatenate([prev_swin, swin]), 3.0)[HALF_HOURS:]
    anomaly = 3.2 * (
        0.7 * noise(seed, NATIONAL, "temperature", mid, 720)
        + 0.4 * noise(seed, site_id, "temperature", mid, 360)
    )
    ta = season_temperature(profile, mid) + anomaly + 0.013 * swin_warm - 1.8 * (1.0 - cloud)
    rain = rain_half_hours(seed, site_id, day)
    depression = np.clip(
        2.5 + 1.5 * noise(seed, site_id, "dryness", mid, 360) + 0.01 * swin_warm * (1 - cloud),
        0.1,
        None,
    )
    depression = np.where(rain > 0.0, 0.25 * depression, depression)
    dew = np.minimum(ta - depression, 19.0)  # British air masses rarely hold more
    rh = np.clip(100.0 * saturation_vapour_hpa(dew) / saturation_vapour_hpa(ta), 30.0, 100.0)
    pa = (
        profile.pressure_hpa
        + 9.0 * noise(seed, NATIONAL, "pressure", mid, 720)
        + 4.0 * noise(seed, NATIONAL, "pressure-slow", mid, 1440)
        + 0.8 * noise(seed, site_id, "pressure", mid, 180)
    )
    ws = np.exp(
        0.55
        + 0.45 * noise(seed, NATIONAL, "wind", mid, 360)
        + 0.3 * noise(seed, site_id, "wind", mid, 120)
    ) * (1.0 + 0.35 * np.clip(swin, 0.0, None) / 800.0)
    wd = (
        230.0
        + 80.0 * noise(seed, NATIONAL, "direction", mid, 720)
        + 25.0 * noise(seed, site_id, "direction", mid, 180)
    ) % 360.0
    return Weather(
        minutes=ends,
        rain=rain,
        cloud=cloud,
        swin=swin,
        ta=_frozen(ta),
        rh=_frozen(rh),
        pa=_frozen(np.clip(pa, 930.0, 1045.0)),
        ws=_frozen(np.clip(ws, 0.0, 25.0)),
        wd=_frozen(wd),
        swin_lag=_frozen(swin_lag),
    )


def battery_volts(w: Weather) -> np.ndarray:
    """Lead-acid battery on a solar panel: charges in sunshine, sags on cold dark nights."""
    charge = 1.6 * np.clip(w.swin_lag, 0.0, 600.0) / 600.0
    return np.clip(12.4 + charge - 0.15 * (w.ta < 0.0), 11.8, 14.5)


def absolute_humidity(ta: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """Water vapour density (g m-3) from air temperature and relative humidity."""
    return 216.7 * (rh / 100.0) * saturation_vapour_hpa(ta) / (ta + 273.15)


# --- soil ---------------------------------------------------------------------------------


def _history(seed: int, profile: SiteProfile, day: int, days: int, what: str) -> np.ndarray:
    if what == "rain":
        parts = [rain_half_hours(seed, profile.site_id, d) for d in range(day - days, day + 1)]
    else:
        parts = [weather(seed, profile, d).ta for d in range(day - days, day + 1)]
    return np.concatenate(parts)


@lru_cache(maxsize=4096)
def soil_temperatures(seed: int, profile: SiteProfile, day: int) -> dict[int, np.ndarray]:
    """Soil temperature by depth (cm): the air temperature damped and delayed with depth."""
    ta = _history(seed, profile, day, _SOIL_LOOKBACK_DAYS, "ta")
    season = season_temperature(profile, period_ends(day, 30)) + 0.8
    out = {}
    for depth in SOIL_DEPTHS_CM:
        lagged = ema(ta, _SOIL_TAU_HALF_HOURS[depth], start=float(ta[:HALF_HOURS].mean()))
        weight = _SOIL_SEASON_WEIGHT[depth]
        out[depth] = _frozen(
            np.clip((1.0 - weight) * lagged[-HALF_HOURS:] + weight * season, -3.0, 25.0)
        )
    return out


def soil_temperature_at(temps: dict[int, np.ndarray], depth_cm: float) -> np.ndarray:
    depths = np.array(SOIL_DEPTHS_CM, dtype=float)
    i = int(np.clip(np.searchsorted(depths, depth_cm), 1, len(depths) - 1))
    lo, hi = SOIL_DEPTHS_CM[i - 1], SOIL_DEPTHS_CM[i]
    w = float(np.clip((depth_cm - lo) / (hi - lo), 0.0, 1.0))
    return (1.0 - w) * temps[lo] + w * temps[hi]


@lru_cache(maxsize=8192)
def soil_moisture(seed: int, profile: SiteProfile, day: int, tau_days: float) -> np.ndarray:
    """Volumetric water content (%) of a layer that drains with time constant ``tau_days``.

    Rain fills a store that empties exponentially; VWC saturates smoothly between the site's
    dry and wet limits, so it jumps after rain and then dries out. Deeper layers have longer
    time constants, so they respond less and later.
    """
    rain = _history(seed, profile, day, _WATER_LOOKBACK_DAYS, "rain")
    stored = storage(rain, tau_days * HALF_HOURS)[-HALF_HOURS:]
    doy = day_of_year(period_ends(day, 30))
    base = 12.0 * (1.0 + 0.6 * np.cos(2 * np.pi * (doy - 30.0) / 365.2422))  # wet winters
    fill = 1.0 - np.exp(-(base + stored) / 28.0)
    return _frozen(profile.theta_dry + (profile.theta_wet - profile.theta_dry) * fill)


_EPS_GRID = np.linspace(1.0, 45.0, 881)
_THETA_GRID = 100 * (-5.3e-2 + 2.92e-2 * _EPS_GRID - 5.5e-4 * _EPS_GRID**2 + 4.3e-6 * _EPS_GRID**3)


def permittivity(vwc: np.ndarray) -> np.ndarray:
    """Relative permittivity that a TDT probe reads for a VWC (inverse of Topp's equation)."""
    return np.interp(vwc, _THETA_GRID, _EPS_GRID)


# --- neutrons -----------------------------------------------------------------------------


def nmdb_intensity(seed: int, minutes: np.ndarray) -> np.ndarray:
    """Jungfraujoch pressure-corrected count rate (counts/s): a slow drift of a few percent."""
    drift = 0.02 * noise(seed, NEUTRON_MONITOR, "drift", minutes, 1440) + 0.006 * noise(
        seed, NEUTRON_MONITOR, "wiggle", minutes, 180
    )
    return NMDB_REFERENCE * (1.0 + drift)


def nmdb_pressure(seed: int, minutes: np.ndarray) -> np.ndarray:
    return 652.0 + 3.0 * noise(seed, NEUTRON_MONITOR, "pressure", minutes, 720)


def expected_neutrons(
    profile: SiteProfile,
    vwc: np.ndarray,
    pa: np.ndarray,
    q: np.ndarray,
    intensity: np.ndarray,
) -> np.ndarray:
    """Mean moderated counts per 30 min: fewer over wetter soil (Desilets et al. 2010).

    The raw rate also rises as air pressure falls, falls with water vapour, and follows the
    incoming cosmic-ray intensity that the neutron monitor (NMDB table) measures.
    """
    theta = vwc / 100.0
    dry_to_wet = 0.0808 / (theta + 0.115) + 0.372
    pressure = np.exp((profile.pressure_hpa - pa) / 130.0)
    vapour = 1.0 / (1.0 + 0.0054 * (q - 7.0))
    return profile.neutron_n0 * dry_to_wet * pressure * vapour * intensity / NMDB_REFERENCE


def bucket_emptied_before(phase_days: int, minute: int) -> int:
    """The last time (minute) at or before ``minute`` that the Pluvio bucket was emptied."""
    period = BUCKET_DAYS * MINUTES_PER_DAY
    offset = phase_days * MINUTES_PER_DAY + 600  # at 10:00 on the service day
    return (minute - offset) // period * period + offset


def clear_caches() -> None:
    for cached in (_knots, _rain_events, rain_minutes, rain_half_hours, rain_total, _sky):
        cached.cache_clear()
    for cached_model in (weather, soil_temperatures, soil_moisture):
        cached_model.cache_clear()
