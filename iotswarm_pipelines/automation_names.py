"""The sensor or schedule a name given to ``make sensor-stop NAME=…`` (and the other switches)
means.

Sensors and schedules are named from their table in lower case
(``cosmos_new_rows_level1_soilmet_30min``), but operators copy the table's own spelling
(``cosmos_new_rows_LEVEL1_SOILMET_30MIN``, or just ``LEVEL1_SOILMET_30MIN``), which ``dagster
sensor stop`` answered with a traceback. Any case, the table alone and the old tool's table
spelling resolve here; a name nothing knows is one line that lists the valid names.

``python -m iotswarm_pipelines.automation_names sensor|schedule NAME`` prints the name, or the
line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from iotswarm_pipelines.cosmos import catalogue

PREFIXES = {"sensor": "cosmos_new_rows_", "schedule": "cosmos_every_"}
"""What a table's own sensor or schedule is called before the table's name."""


class UnknownNameError(ValueError):
    """No sensor or schedule of the definitions has this name (the message lists them)."""


def known_names(kind: str) -> list[str]:
    """The names of the definitions' sensors or schedules (loads the definitions)."""
    from iotswarm_pipelines.definitions import defs

    repository = defs.get_repository_def()
    found = repository.sensor_defs if kind == "sensor" else repository.schedule_defs
    return sorted(d.name for d in found)


def resolve(kind: str, given: str, names: Sequence[str] | None = None) -> str:
    """The ``kind`` ("sensor" or "schedule") that ``given`` names, in any case or by its table."""
    names = known_names(kind) if names is None else names
    wanted = given.strip().lower()
    by_lower = {name.lower(): name for name in names}
    if wanted in by_lower:
        return by_lower[wanted]
    prefix = PREFIXES[kind]
    try:
        table = catalogue.get_table(wanted.removeprefix(prefix))
    except catalogue.UnknownTableError:
        table = None
    if table is not None and (candidate := prefix + table.name.lower()) in by_lower:
        return by_lower[candidate]
    raise UnknownNameError(
        f"no {kind} {given.strip()!r} (names are in lower case; a table's own spelling works "
        f"too); valid: {', '.join(names)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    kind, given = list(sys.argv[1:] if argv is None else argv)
    try:
        print(resolve(kind, given))
    except UnknownNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
