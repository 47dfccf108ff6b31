"""The options the one config file may set, each declared once: name, type, default, help, check.

They are the export's options, but the old tool's config file is shared by both command trees
(``iot-swarm`` accepts every key ``live-cosmos`` does), and export and swarm must never import
each other: so they live here, beside neither, with the file's whole key list (``KEYS``) and
the two rules the export applies to the same values elsewhere too (``check_fallback_hours``,
``clean_sites``).

Three typed models, each adding to the one before, because the export's runs need different
subsets of the same options:

- ``PayloadOptions``: the payload text's two choices (``payloads.PayloadFormat``), declared in
  ``payload_options`` because the swarm writes payloads too.
- ``BatchOptions``: which sites and how many rows per payload, as the history re-export and the
  reconciliation (which must cut payloads as the export did) take them too.
- ``ExportOptions``: the live export's, the ones its config file may set too.
- ``LiveRunOptions``: what one live export run adds, on either command line or in the
  launchpad but never in the file (a replay window, a dry run): a file says how a deployment
  exports, a run what it does this time.

Derived from them: the Dagster run configs (``assets.LiveExportConfig``,
``assets.HistoryExportConfig``, ``reconcile_assets.ReconcileConfig``), the config file's
keys (``KEYS``) and values (``config_file``, by ``option_kind``), ``live-cosmos``'s flags
(``export.cli``) and the docs' option table (``option_docs``). The
``check_options`` methods raise ``ValueError`` with one line, so a run fails with that line
rather than a validation traceback (which is also why limits are checked here and not on
construction).

Plain data and rules, no I/O.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Union, get_args, get_origin

from pydantic import Field

from iotswarm_pipelines.config_formats import IOT_CORE_KEYS
from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.payload_options import PayloadOptions

DEFAULT_FALLBACK_HOURS = 3.0
"""How far back a site the state has never seen starts, unless a run says otherwise."""


def check_fallback_hours(hours: float) -> None:
    """Raises ``ValueError`` (one line) unless ``hours`` is 0 or more (infinity too)."""
    if not hours >= 0:  # also false for NaN
        raise ValueError(
            f"fallback_hours must be a number of hours, 0 or more, got {hours:g} (a huge value "
            "such as 1000000 means every row)"
        )


def clean_sites(sites: Iterable[str]) -> list[str]:
    """Configured site IDs trimmed, blanks dropped, duplicates (in any case) kept once."""
    seen: dict[str, str] = {}
    for site in sites:
        trimmed = site.strip()
        if trimmed:
            seen.setdefault(trimmed.casefold(), trimmed)
    return list(seen.values())


class BatchOptions(PayloadOptions):
    """Which sites, and how many rows each payload carries."""

    sites: list[str] | None = Field(
        default=None,
        description="Site IDs to export; when not set, every site with rows in the table.",
    )
    batch_size: int | None = Field(
        default=None,
        description="Rows per payload, 1 or more; when not set, the table's default (1).",
    )

    def check_batch_size(self) -> None:
        """Raises ``ValueError`` (one line) for a batch of no rows."""
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(
                f"batch_size must be 1 or more rows per payload, got {self.batch_size}"
            )

    def check_options(self) -> None:
        """Raises ``ValueError`` (one line) for the first bad option.

        An empty site list is a slip, not "all sites"; which IDs exist only the source can say
        (``export.sites`` matches them when the run reads the table).
        """
        if self.sites is not None and not clean_sites(self.sites):
            raise ValueError(
                "sites is empty; list site IDs like ['ALIC1', 'BALRD'], or leave it out"
            )
        self.check_batch_size()


class ExportOptions(BatchOptions):
    """The live export's options; its config file may set each of them too."""

    fallback_hours: float = Field(
        default=DEFAULT_FALLBACK_HOURS,
        description=(
            "How far back to start for a site the state has never seen, in hours (0 or more; "
            "anything beyond 50 years, e.g. 1000000, means from its first row)."
        ),
    )
    pushgateway: str | None = Field(
        default=None,
        description=(
            "Push the run's metrics to this Pushgateway (http://host:9091) when it ends; "
            "default $IOTSWARM_PUSHGATEWAY, else none. A failed push is a warning only."
        ),
    )

    def check_options(self) -> None:
        super().check_options()
        if self.pushgateway:
            exposition.check_pushgateway(self.pushgateway)
        check_fallback_hours(self.fallback_hours)


def check_time(name: str, value: str | None) -> None:
    """Raises ``ValueError`` (one line) unless ``value`` is a GMT time without a zone: a typo in
    a replay window must fail the launch, not export the wrong window."""
    if value is None:
        return
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} is not an ISO 8601 date/time; write it like 2024-06-01T00:30 (GMT)"
        ) from None
    if parsed.tzinfo is not None:
        raise ValueError(
            f"{name}={value!r} has a time zone; give GMT without one (2024-06-01T00:30)"
        )


class LiveRunOptions(ExportOptions):
    """One live export run's own choices besides the export's options."""

    since: str | None = Field(
        default=None,
        description=(
            "Replay: re-export rows after this GMT time (ISO 8601, e.g. 2024-06-01T00:30) "
            "whatever the watermarks say; when not set, each site's watermark."
        ),
    )
    until: str | None = Field(
        default=None,
        description="Replay: stop at this GMT time (inclusive); when not set, the newest row.",
    )
    dry_run: bool = Field(
        default=False, description="Build and count payloads; store nothing, move no watermark."
    )

    def check_options(self) -> None:
        super().check_options()
        check_time("since", self.since)
        check_time("until", self.until)
        since, until = self.since_time, self.until_time
        if since is not None and until is not None and until <= since:
            raise ValueError(f"until={self.until!r} must be later than since={self.since!r}")

    @property
    def since_time(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None

    @property
    def until_time(self) -> datetime | None:
        return datetime.fromisoformat(self.until) if self.until else None


def option_kind(name: str) -> Any:
    """A live run option's value type without ``None``, ``list`` for a list: what decides how a
    command line or the config file spells its value."""
    kind = LiveRunOptions.model_fields[name].annotation
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    return get_origin(kind) or kind


KEYS = (
    "dsn",
    "user",
    "pass",
    "url",
    "bucket",
    "bucket_prefix",
    "endpoint_url",
    "object_dir",
    "state_dir",
    "state_prefix",
    *ExportOptions.model_fields,
    *IOT_CORE_KEYS,
)
"""The config file's keys: where to read and write, the export's options and the IoT Core keys
(the swarm's; ``live-cosmos`` ignores them)."""
