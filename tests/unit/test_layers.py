"""The package's layers, checked on the source: an import that points up a layer fails here, by file and line.

Read from the bottom: the settings and the error hierarchy; the memory core (the flow, the service, the owner's
view and the ports it owns); the model clients and the stores that implement those ports; the engines and the
repository on top of them; whole-table jobs; the request edge and the HTTP faces; the wiring. A module may import
its own layer and any layer below. Type-only and function-level imports count too: they are dependencies all the
same. The same spirit as ``test_mem0_guard.py``: the rule lives in one place and fails loudly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tablestore_openmemory_mcp"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE

#: Layer of each top-level module or package (a dotted prefix; the longest prefix wins), lowest first.
LAYERS: dict[str, int] = {
    # 0 foundation: read by everything, imports nothing of ours above it
    "": 0,  # the package's own __init__ (its version)
    "settings": 0,
    "errors": 0,
    "scope": 0,
    "progress": 0,
    "auth.config": 0,  # the OAuth half of the settings: Settings validates with it
    # 1 the memory core: flow, service, owner's view, ports; pure (no transport, no store SDK, no job)
    "memory": 1,
    # 2 adapters: the model clients and the stores implementing memory's ports
    "models": 2,
    "embedders": 2,
    "stores": 2,
    # 3 engines: the repository over a store, and mem0 2.x behind the same ports
    "repository": 3,
    "mem0": 3,
    # 4 jobs: whole-table work (backup, upgrade from the reference, re-embedding)
    "backup": 4,
    "migrate": 4,
    "reembed": 4,
    # 5 the request edge and the HTTP faces
    "edge": 5,
    "auth": 5,
    "rest": 5,
    "web": 5,
    "transports": 5,
    # 6 the wiring: command line, composition root, subcommands
    "app": 6,
    "__main__": 6,
}
NAMES = ["foundation", "memory core", "adapters", "engines", "jobs", "edge", "wiring"]

#: Pairs in the same layer that must not meet either: a store never calls a model, nor a model a store.
APART = [("stores", "models"), ("stores", "embedders"), ("models", "stores"), ("embedders", "stores")]


def dotted(relative: str) -> str:
    """``memory/flow.py`` -> ``memory.flow``; a package's ``__init__.py`` is the package."""
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> tuple[str, int]:
    """The longest prefix of ``module`` in :data:`LAYERS` and its layer."""
    parts = module.split(".") if module else []
    for size in range(len(parts), -1, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYERS and (size or not parts):
            return prefix, LAYERS[prefix]
    raise KeyError(module)


def imports_of(relative: str, source: str, modules: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of this package in a file (relative imports resolved; ``from pkg import
    sub`` names the submodule when ``modules`` has it; the package itself is ``""``)."""
    own = dotted(relative).split(".") if dotted(relative) else []
    package = own if relative.endswith("__init__.py") else own[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            subs = [f"{module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, sub) for sub in subs if sub.removeprefix(PACKAGE + ".") in modules] or [
                (node.lineno, module)
            ]
    return [
        (line, name.removeprefix(PACKAGE).removeprefix(".")) for line, name in found if name.split(".")[0] == PACKAGE
    ]


def sources() -> dict[str, str]:
    """Every module of the package: its path below the package and its text."""
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.py"))}


def violations(files: dict[str, str]) -> list[str]:
    """Every import that points to a higher layer or across an :data:`APART` pair, as ``file:line -> module``."""
    modules = {dotted(relative) for relative in files}
    found: list[str] = []
    for relative, source in files.items():
        owner, rank = layer_of(dotted(relative))
        for line, target in imports_of(relative, source, modules):
            to_owner, to_rank = layer_of(target)
            where = f"{relative}:{line} -> {target or PACKAGE}"
            if to_rank > rank:
                found.append(f"{where} ({NAMES[rank]} imports {NAMES[to_rank]})")
            elif (owner.split(".")[0], to_owner.split(".")[0]) in APART:
                found.append(f"{where} ({owner} and {to_owner} stay apart)")
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for relative in sources():
        try:
            layer_of(dotted(relative))
        except KeyError:
            unplaced.append(relative)
    assert unplaced == [], f"place these in LAYERS (tests/unit/test_layers.py): {unplaced}"


def test_imports_point_down_the_layers() -> None:
    found = violations(sources())
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("memory/service.py", "from tablestore_openmemory_mcp.backup.exporter import export_zip\n", "jobs"),
        ("memory/flow.py", "from tablestore_openmemory_mcp.edge import tools\n", "edge"),
        ("memory/flow.py", "from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore\n", "adapters"),
        ("memory/flow.py", "from tablestore_openmemory_mcp.models.llm import ChatClient\n", "adapters"),
        ("memory/flow.py", "from tablestore_openmemory_mcp import repository\n", "engines"),
        ("settings.py", "from tablestore_openmemory_mcp.app import cli\n", "wiring"),
        ("stores/x.py", "from ..embedders import offline\n", "stay apart"),
        ("rest/x.py", "if True:\n    from tablestore_openmemory_mcp.app.bootstrap import open_repository\n", "wiring"),
        (
            "memory/x.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..transports import serve\n",
            "edge",
        ),
    ],
)
def test_an_import_pointing_up_fails(module: str, source: str, why: str) -> None:
    """The checker itself: each of these, planted in the tree, is reported (and nothing else is)."""
    files = sources()
    files[module] = files.get(module, "") + "\n" + source
    found = violations(files)
    assert len(found) == 1 and found[0].startswith(module) and why in found[0], found
