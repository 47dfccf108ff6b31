"""Which stored site IDs an export reads: the configured sites, matched once at the edge.

The source is the truth. A configured site is trimmed and matched case-insensitively against
the IDs the table stores, and the export then queries with the ID exactly as stored: a source
that stores ``alic1`` is read, ``ALIC1,ALIC1,alic1`` reads ALIC1 once, and a site that the
catalogue does not know yet (a new station) is exported like any other, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.file_options import clean_sites


class UnknownSiteError(ValueError):
    """A configured site that neither the table nor the catalogue knows, in any case."""


@dataclass(frozen=True)
class Selection:
    """The stored site IDs to read, and what the operator should hear about the choice."""

    site_ids: list[str]
    warnings: list[str] = field(default_factory=list)


def select(
    table: catalogue.Table,
    requested: Sequence[str] | None,
    stored: Sequence[str],
    *,
    require_rows: bool = False,
) -> Selection:
    """The stored IDs matching ``requested`` (all of ``stored`` when None), sorted, once each.

    A requested site the table has no rows for is only a warning when the catalogue knows it
    (the table may not be logged there, or not yet); one that nothing knows is
    ``UnknownSiteError``, a typo that must not export nothing and report success. With
    ``require_rows`` (reconciliation, which checks the store against these rows) a requested
    site without rows is ``UnknownSiteError`` too: checking nothing must not read as complete.
    """
    by_key: dict[str, list[str]] = {}
    for site_id in stored:
        by_key.setdefault(site_id.casefold(), []).append(site_id)
    warnings: list[str] = []
    if requested is None:
        chosen = set(stored)
    else:
        chosen = set()
        for site in clean_sites(requested):
            matches = by_key.get(site.casefold())
            known = ", ".join(sorted(stored)) or "none"
            if matches:
                chosen.update(matches)
            elif site.upper() not in catalogue.SITES_BY_ID:
                raise UnknownSiteError(
                    f"unknown COSMOS site {site!r}: neither {table.name} (in any case) nor the "
                    f"catalogue holds it; sites with rows there: {known}"
                )
            elif require_rows:
                raise UnknownSiteError(
                    f"COSMOS site {site!r} has no rows in {table.name} (in any case), so there is "
                    f"nothing to check it against; sites with rows there: {known}"
                )
            else:
                warnings.append(
                    f"{table.name}: site {site} has no rows in this table; nothing to send"
                )
    warnings += [
        f"{table.name}: site {site_id} is in the source but not in the catalogue; exported anyway "
        "(the source is the truth)"
        for site_id in sorted(chosen)
        if site_id.strip().upper() not in catalogue.SITES_BY_ID
    ]
    return Selection(sorted(chosen), warnings)
