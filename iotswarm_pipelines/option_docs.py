"""The docs' option tables and environment page, generated from the models and the parsers.

``python -m iotswarm_pipelines.option_docs`` rewrites the text between each pair of markers::

    <!-- BEGIN GENERATED swarm-run-options -->
    <!-- END GENERATED swarm-run-options -->

so a default, a help text, a flag or a variable is written once, in code; ``--check`` only says
which pages differ (a test runs it, so drift fails CI). Names, defaults and help come from the
options models, command-line flags from the commands' own parsers, config-file keys from
``file_options.KEYS`` and variables from ``environment``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from iotswarm_pipelines import environment

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python -m iotswarm_pipelines.option_docs"
_MARKERS = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[\w-]+) -->\n).*?(<!-- END GENERATED (?P=name) -->)",
    re.DOTALL,
)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _default(value: Any) -> str:
    if value is None or value == [] or value == "":
        return ""
    return f"`{value}`"


def _flags(parsers: Iterable[argparse.ArgumentParser]) -> dict[str, list[str]]:
    """Option name (the parser's ``dest``) -> its flags over all the parsers, first seen first."""
    flags: dict[str, list[str]] = {}
    for parser in parsers:
        for action in parser._actions:
            spelled = action.option_strings or [str(action.metavar or action.dest)]
            for flag in spelled:
                if flag not in flags.setdefault(action.dest, []):
                    flags[action.dest].append(str(flag))
    return flags


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _model_table(
    model: type[BaseModel],
    flags: Mapping[str, list[str]],
    *,
    keys: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> str:
    config_keys = set(keys)
    header = ["option", "command line", "config file", "environment", "default", "meaning"]
    rows = []
    for name, field in model.model_fields.items():
        if names is not None and name not in names:
            continue
        rows.append(
            [
                f"`{name}`",
                ", ".join(f"`{f}`" for f in flags.get(name, [])),
                f"`{name}`" if name in config_keys else "",
                f"`{env[name]}`" if env and name in env else "",
                _default(field.default),
                field.description or "",
            ]
        )
    keep = [i for i in range(len(header)) if i in (0, 4, 5) or any(r[i] for r in rows)]
    return _table([header[i] for i in keep], ([r[i] for i in keep] for r in rows))


def swarm_run_options() -> str:
    from iotswarm_pipelines.swarm import cli
    from iotswarm_pipelines.swarm.options import SwarmOptions

    return _model_table(SwarmOptions, _flags([cli._parser()]))


def swarm_broker_options() -> str:
    from iotswarm_pipelines.swarm import cli
    from iotswarm_pipelines.swarm.options import BrokerOptions

    return _model_table(BrokerOptions, _flags([cli._parser()]), env=environment.BY_OPTION)


def export_options() -> str:
    from iotswarm_pipelines import file_options
    from iotswarm_pipelines.export import cli
    from iotswarm_pipelines.export.assets import LiveExportConfig

    flags = _flags([cli._parser(), cli._send_live_data_parser()])
    flags["dry_run"] += flags.pop("dry", [])
    return _model_table(LiveExportConfig, flags, keys=file_options.KEYS)


def environment_variables() -> str:
    parts = []
    for title, variables in environment.VARIABLES.items():
        rows = ([f"`{v.name}`", v.default, v.meaning] for v in variables)
        parts.append(f"**{title}**\n\n" + _table(["variable", "default", "meaning"], rows))
    return "\n".join(parts)


SECTIONS: dict[str, Callable[[], str]] = {
    "swarm-run-options": swarm_run_options,
    "swarm-broker-options": swarm_broker_options,
    "export-options": export_options,
    "environment": environment_variables,
}
PAGES = ("docs/mqtt-swarm.md", "docs/live-export.md", "docs/environment.md")


def generated(text: str, sections: Mapping[str, str]) -> str:
    """``text`` with each marked section replaced by its generated table."""
    return _MARKERS.sub(lambda m: m[1] + sections[m["name"]] + m[3], text)


def _rewritten(root: Path) -> dict[Path, str]:
    """Each page whose generated sections differ from what the code says now -> its new text."""
    sections = {name: make() for name, make in SECTIONS.items()}
    pages = {root / page: (root / page).read_text() for page in PAGES}
    return {path: new for path, text in pages.items() if (new := generated(text, sections)) != text}


def stale(root: Path = ROOT) -> list[str]:
    """The pages that ``main`` would rewrite."""
    return [str(path.relative_to(root)) for path in _rewritten(root)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the pages; with ``--check``, only name the ones out of date (exit 1)."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    changed = _rewritten(ROOT)
    for path, text in changed.items():
        if check:
            print(f"{path.relative_to(ROOT)} is out of date: run {COMMAND}", file=sys.stderr)
        else:
            path.write_text(text)
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
