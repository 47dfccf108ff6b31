"""The command modules share through public modules, never through each other's private names,
and import one another without a cycle (issue 24, item 4).

Read from the source (every import, at the top or inside a function, and every ``module._name``
reached through an imported module), so a lazy import counts as much as an eager one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iotswarm_pipelines"

COMMAND_MODULES = (
    "iotswarm_pipelines.command_line",
    "iotswarm_pipelines.cosmos.sample.cli",
    "iotswarm_pipelines.entry",
    "iotswarm_pipelines.export.cli",
    "iotswarm_pipelines.export.commands",
    "iotswarm_pipelines.export.reconcile_cli",
    "iotswarm_pipelines.swarm.cli",
    "iotswarm_pipelines.swarm.launch",
    "iotswarm_pipelines.swarm.old_commands",
)
"""The command lines and what they share."""


def _path(module: str) -> Path:
    return PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")


def _is_module(name: str) -> bool:
    return (
        _path(name).is_file() or PACKAGE.parent.joinpath(*name.split("."), "__init__.py").is_file()
    )


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")  # ``__version__`` is public


def _imports(module: str) -> tuple[set[str], list[str]]:
    """(project modules ``module`` imports, private project names it uses)."""
    tree = ast.parse(_path(module).read_text())
    modules: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("iotswarm_pipelines"):
                    modules.add(alias.name)
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "iotswarm_pipelines"
        ):
            assert node.module is not None
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if _is_module(name):
                    modules.add(name)
                    aliases[alias.asname or alias.name] = name
                else:
                    modules.add(node.module)
                    if _private(alias.name):
                        private.append(name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _private(node.attr)
        ):
            private.append(f"{aliases[node.value.id]}.{node.attr}")
    return modules - {module}, private


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_no_private_name_of_another_module_is_used(module):
    assert _imports(module)[1] == []


def test_the_command_modules_import_each_other_without_a_cycle():
    edges = {m: _imports(m)[0].intersection(COMMAND_MODULES) for m in COMMAND_MODULES}

    def visit(module: str, path: tuple[str, ...]) -> None:
        for imported in edges[module]:
            assert imported not in path, " -> ".join((*path, module, imported))
            visit(imported, (*path, module))

    for module in COMMAND_MODULES:
        visit(module, ())


SWARM_MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for path in (PACKAGE / "swarm").rglob("*.py")
)


@pytest.mark.parametrize("module", SWARM_MODULES)
def test_the_swarm_never_imports_the_export(module):
    """What both need (the config file's keys, the payload options) lives beside both."""
    imported = _imports(module)[0]
    assert [m for m in imported if m.split(".")[:2] == ["iotswarm_pipelines", "export"]] == []
