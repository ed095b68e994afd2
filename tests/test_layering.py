"""The three worlds and the layers inside the router, read from the source (every import counts:
module level, inside functions, and under TYPE_CHECKING).

- The router (gateway, drivers, buffer, provisioning) never imports the simulated home (rig) or
  the provider (provider): only the router goes into the .deb (tests/test_packaging.py checks
  the package itself).
- Inside the router each group imports only the groups ALLOWED names; each package's __init__
  says the same in words.
- No import cycle anywhere in our code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUTER = ("gateway", "drivers", "buffer", "provisioning")
WORLDS = (*ROUTER, "rig", "provider")
SHARED = "gateway"  # gateway's top-level modules: model, errors, gaps, alarms, progress, ...

# group -> the other groups it may import. A group is a top-level package, a gateway subpackage,
# or gateway's shared top-level modules.
_ROUTER_BELOW_CLI = {
    SHARED, "gateway.seal", "gateway.fhir", "gateway.pipeline", "gateway.config",
    "gateway.uplink", "gateway.power", "gateway.updates", "buffer", "drivers.ble",
    "drivers.serial", "provisioning",
}  # fmt: skip
ALLOWED: dict[str, set[str]] = {
    SHARED: set(),
    "gateway.seal": {SHARED},
    # software updates: manifest, inbox, the root updater (reads [updates] only)
    "gateway.updates": {SHARED, "gateway.config"},
    "gateway.power": {SHARED},  # the UPS (NUT client, debounce, monitor, power-off request)
    "gateway.fhir": {SHARED, "gateway.seal"},
    "buffer": {SHARED, "gateway.seal"},
    "gateway.pipeline": {SHARED, "gateway.seal", "gateway.fhir", "buffer"},
    "drivers.ble": {SHARED, "gateway.fhir", "gateway.pipeline", "provisioning"},
    "drivers.serial": {SHARED, "gateway.fhir", "gateway.pipeline"},
    "drivers": {SHARED},
    "gateway.uplink": {SHARED, "gateway.seal", "gateway.pipeline", "gateway.config", "buffer"},
    "gateway.config": {
        SHARED, "gateway.seal", "gateway.pipeline", "drivers.ble", "drivers.serial",
        "provisioning",
    },
    "provisioning": {SHARED, "gateway.seal", "gateway.config", "gateway.uplink", "buffer"},
    # Signed commands (issue 20): the pure envelope, registry, ledger and runner.
    "gateway.commands": {SHARED},
    # The composition root; it runs the technician's support bundle (gateway.cli.support_bundle)
    # for the command centre's support.bundle command.
    "gateway.daemon": {*_ROUTER_BELOW_CLI, "gateway.commands", "gateway.cli"},
    "gateway.cli": _ROUTER_BELOW_CLI,
    "rig": {*_ROUTER_BELOW_CLI, "rig.ble", "rig.serial"},
    "rig.ble": {*_ROUTER_BELOW_CLI, "rig"},
    "rig.serial": {*_ROUTER_BELOW_CLI, "rig"},
    "provider": {*_ROUTER_BELOW_CLI, "gateway.commands", "rig", "rig.ble", "rig.serial"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for world in WORLDS:
        for path in (ROOT / world).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def group(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("gateway", "drivers", "rig") and len(parts) > 1:
        if (ROOT / parts[0] / parts[1]).is_dir():
            return f"{parts[0]}.{parts[1]}"
        return SHARED if parts[0] == "gateway" else parts[0]
    return parts[0]


def _resolve(target: str) -> str | None:
    """The module of ours an import names (``from gateway.fhir import vocab`` -> the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports(module: str) -> Iterator[tuple[str, int]]:
    """(module of ours imported, line) for every import statement in ``module``."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{module}:{node.lineno}: relative import; write it absolute")
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                yield target, node.lineno


GRAPH = {m: sorted({t for t, _ in imports(m)}) for m in MODULES}


def test_the_router_never_imports_the_simulated_home_or_the_provider() -> None:
    offending = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        if m.split(".")[0] in ROUTER
        for t, line in imports(m)
        if t.split(".")[0] in ("rig", "provider")
    ]
    assert offending == []


def test_every_group_imports_only_what_its_layer_allows() -> None:
    offending = [
        f"{m}:{line} ({group(m)}) imports {t} ({group(t)})"
        for m in MODULES
        for t, line in imports(m)
        if group(t) != group(m) and group(t) not in ALLOWED[group(m)]
    ]
    assert offending == []


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components; any component of two or more modules is a
    cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    assert find_cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": ["e2"], "e2": []}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_the_import_reader_sees_lazy_and_type_checking_imports() -> None:
    lazy = {t for t, _ in imports("gateway.daemon.wiring")}
    assert "drivers.ble.agent" in lazy  # under TYPE_CHECKING and inside build_agent
    assert "rig.devices" not in lazy  # the simulated kind is a plug-in (entry point)
    assert group("gateway.cli.output") == "gateway.cli"
    assert group("gateway.model") == SHARED
    assert group("rig.pki") == "rig"


@pytest.mark.parametrize(
    "package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py")
)
def test_each_package_says_what_lives_there_and_what_it_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    assert doc, f"{package}/__init__.py has no docstring"
    if group(package) != SHARED or package == "gateway":
        assert "import" in doc.lower(), f"{package}: say what it may import"
