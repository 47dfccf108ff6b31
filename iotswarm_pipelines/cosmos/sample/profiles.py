"""What each synthetic site is fitted with, decided once per site ID and never by the seed.

A site's hardware is part of the site, not of a run, so the same site has the same sensors under
every seed. The rain[e] subset and the optional sensor groups live only here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from iotswarm_pipelines.cosmos import catalogue

# Sites given a rain[e] gauge (LEVEL1_PRECIP_RAINE_1MIN); a synthetic choice, not the real list.
RAINE_SITES: frozenset[str] = frozenset(
    {
        "ALIC1",
        "BALRD",
        "CHIMN",
        "COCLP",
        "EASTB",
        "GLENS",
        "HOLLN",
        "MORLY",
        "PLYNL",
        "ROTHD",
        "SHEEP",
        "WADDN",
    }
)

_TDT_EXTRA = tuple(
    f"TDT{n}_{part}" for n in range(3, 11) for part in ("VWC", "TSOIL", "SOILEC", "SOILPERM")
)

# Optional SOILMET sensor groups: a site without the group has NULL in all of its columns.
SENSOR_GROUPS: dict[str, tuple[str, ...]] = {
    "metpak": ("Q_STD", "METPAK_SAMPLES", "RH_INTERNAL", "WS_RES"),
    "snow": (
        "SNOWD_DISTANCE_UNC",
        "SNOWD_SIGNALQUALITY",
        "SNOWD_DISTANCE_COR",
        "CTS_SNOW",
        *(f"CTS_SNOW_DIAG_{i}" for i in range(1, 6)),
        "CTS_SNOW_TEMP",
        "CTS_SNOW_RH",
        "CTS_SNOW_PERIOD",
    ),
    "bare": ("CTS_BARE",),
    "mod2": ("CTS_MOD2", "CTS_MOD2_RH", "CTS_MOD2_TEMP", "CTS_MOD2_PERIOD"),
    "profile": tuple(
        f"PROFILE_{kind}{depth}" for depth in (15, 40, 65) for kind in ("VWC", "SOILEC")
    ),
    "mod_diag": tuple(f"CTS_MOD_DIAG_{i}" for i in range(1, 6)),
    "sonic": (
        "UX",
        "UZ",
        "UY",
        "STDEV_UX",
        "STDEV_UY",
        "STDEV_UZ",
        "COV_UX_UY",
        "COV_UX_UZ",
        "COV_UY_UZ",
        "HS",
        "TAU",
        "U_STAR",
        "TS",
        "STDEV_TS",
        "COV_TS_UX",
        "COV_TS_UY",
        "COV_TS_UZ",
    ),
    "tdt_extra": _TDT_EXTRA,
    "tipping": ("PRECIP_TIPPING_A", "PRECIP_TIPPING_B", "PRECIP_TIPPING2", "TBR_TIP"),
}
# Share of sites fitted with each optional group.
_GROUP_SHARE = {
    "metpak": 0.3,
    "snow": 0.2,
    "bare": 0.1,
    "mod2": 0.1,
    "profile": 0.2,
    "mod_diag": 0.3,
    "sonic": 0.15,
    "tdt_extra": 0.1,
    "tipping": 0.3,
}
OS_VERSIONS = ("CR1000X.Std.07.02", "CR1000X.Std.06.00", "CR1000X.Std.05.03")


def unit(site_id: str, what: str) -> float:
    """A stable number in [0, 1) for a site and a property (same on every machine and run)."""
    digest = hashlib.blake2b(f"{site_id}/{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _between(site_id: str, what: str, low: float, high: float) -> float:
    return low + (high - low) * unit(site_id, what)


@dataclass(frozen=True)
class SiteProfile:
    """Fixed properties of a synthetic site: sensors fitted, calibrations and soil."""

    site: catalogue.Site
    groups: frozenset[str]
    has_raine: bool
    pressure_hpa: float  # mean station pressure (elevation)
    temp_offset: float  # climate offset from the latitude trend, degC
    theta_dry: float  # VWC % after a long dry spell
    theta_wet: float  # VWC % at saturation
    neutron_n0: float  # counts per 30 min over dry soil at reference pressure
    gauge_factor: float  # rain[e] catch relative to the Pluvio
    albedo: float
    wm_sentinel: bool  # logs WM_NAN_COUNT = 99999.99999 like ALIC1
    bucket_phase_days: int  # Pluvio bucket emptied every BUCKET_DAYS, offset by this
    calibrations: tuple[float, ...]  # SWIN/SWOUT/LWIN/LWOUT multipliers, G1/G2 CAL
    os_version: str

    @property
    def site_id(self) -> str:
        return self.site.site_id

    def lacks(self, group: str) -> bool:
        return group not in self.groups


@cache
def profile(site_id: str) -> SiteProfile:
    site = catalogue.get_site(site_id)
    sid = site.site_id
    dry = _between(sid, "theta_dry", 5.0, 15.0)
    return SiteProfile(
        site=site,
        groups=frozenset(g for g, share in _GROUP_SHARE.items() if unit(sid, g) < share),
        has_raine=sid in RAINE_SITES,
        pressure_hpa=_between(sid, "pressure", 960.0, 1012.0),
        temp_offset=_between(sid, "temp", -1.5, 1.0),
        theta_dry=dry,
        theta_wet=dry + _between(sid, "theta_wet", 30.0, 42.0),
        neutron_n0=_between(sid, "n0", 1000.0, 1550.0),
        gauge_factor=_between(sid, "gauge", 0.92, 1.06),
        albedo=_between(sid, "albedo", 0.15, 0.26),
        wm_sentinel=unit(sid, "wm") < 0.5,
        bucket_phase_days=int(unit(sid, "bucket") * 14),
        calibrations=(
            round(_between(sid, "swin_mult", 55.0, 65.0), 3),
            round(_between(sid, "swout_mult", 48.0, 56.0), 4),
            round(_between(sid, "lwin_mult", 80.0, 90.0), 4),
            round(_between(sid, "lwout_mult", 85.0, 95.0), 4),
            round(_between(sid, "g1_cal", 20.0, 24.0), 2),
            round(_between(sid, "g2_cal", 20.0, 24.0), 2),
        ),
        os_version=OS_VERSIONS[int(unit(sid, "os") * len(OS_VERSIONS))],
    )


def raine_sites() -> tuple[str, ...]:
    return tuple(s for s in catalogue.SITE_IDS if s in RAINE_SITES)
