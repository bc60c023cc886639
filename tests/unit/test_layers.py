"""Import directions between the layers, read from the source with `ast` (nothing is imported).

The layers, lowest first (docs/architecture.md, "Layout"); each may import itself, the layers
named for it, and `mwcluster.errors`:

    core      pure: no files, sockets, threads, processes, clock or randomness
    storage   bytes in, bytes out: knows nothing of the cluster model (not even core)
    wire      the wire format: core's record kinds and durability levels
    engine    core + storage: the write path and recovery
    config    core + wire: typed configuration
    worker    the handler API a task author imports: nothing else
    security  wire + core: keys, principals, the access table, CURVE on sockets
    client    wire + core + security: the client and its helpers, no engine, no node
    recipes   the client only: locks, elections and barriers are what any client can build
    nodes     where sockets and threads meet the machines: everything above, the client too
              (a worker, a standby and a starting master are clients of a master); the
              master's node imports no other role, the worker's none either, the checkpoint
              node only the master's (a promoted standby runs a Master in its process)
    cli       every layer above (it is the shell)
    demo      the demo cluster: the client, the handler API, the engine and testing's
              process helpers
    testing   twins and process helpers: everything but the cli and the demo

Also: no module imports another module's private name, and no two modules import each other
(directly or through others).

Every import statement counts, including those inside functions and `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "mwcluster"

BASE = ("mwcluster.errors",)
_LOW = ("mwcluster.core", "mwcluster.storage", "mwcluster.wire", "mwcluster.engine",
        "mwcluster.config", "mwcluster.worker", "mwcluster.security", "mwcluster.client")
LAYER_RULES = {
    # layer: the mwcluster modules it may import besides BASE
    "mwcluster.core": ("mwcluster.core",),
    "mwcluster.storage": ("mwcluster.storage",),
    "mwcluster.wire": ("mwcluster.wire", "mwcluster.core"),
    "mwcluster.engine": ("mwcluster.engine", "mwcluster.core", "mwcluster.storage"),
    "mwcluster.config": ("mwcluster.config", "mwcluster.core", "mwcluster.wire"),
    "mwcluster.worker": ("mwcluster.worker",),
    "mwcluster.security": ("mwcluster.security", "mwcluster.core", "mwcluster.wire"),
    "mwcluster.client": ("mwcluster.client", "mwcluster.core", "mwcluster.wire",
                         "mwcluster.security"),
    "mwcluster.recipes": ("mwcluster.recipes", "mwcluster.client"),
    "mwcluster.nodes.master": (*_LOW, "mwcluster.nodes.master", "mwcluster.nodes.metrics",
                               "mwcluster.nodes.status_endpoint"),
    "mwcluster.nodes.worker": (*_LOW, "mwcluster.nodes.worker", "mwcluster.nodes.metrics",
                               "mwcluster.nodes.status_endpoint"),
    "mwcluster.nodes.checkpoint": (*_LOW, "mwcluster.nodes.checkpoint", "mwcluster.nodes.master",
                                   "mwcluster.nodes.metrics", "mwcluster.nodes.status_endpoint"),
    "mwcluster.nodes.metrics": (),
    "mwcluster.nodes.status_endpoint": ("mwcluster.wire", "mwcluster.core",
                                        "mwcluster.security"),
    "mwcluster.cli": (*_LOW, "mwcluster.nodes", "mwcluster.cli", "mwcluster.demo",
                      "mwcluster.recipes"),
    "mwcluster.demo": ("mwcluster.demo", "mwcluster.testing", "mwcluster.client",
                       "mwcluster.security",
                       "mwcluster.worker", "mwcluster.engine", "mwcluster.core"),
    "mwcluster.testing": (*_LOW, "mwcluster.nodes", "mwcluster.testing", "mwcluster.recipes"),
}

# Standard or third-party modules that would bring I/O, time or chance into the pure core.
IMPURE_FOR_CORE = (
    "asyncio", "concurrent", "datetime", "io", "mmap", "multiprocessing", "os", "pathlib",
    "random", "secrets", "select", "selectors", "shutil", "signal", "socket", "subprocess",
    "tempfile", "threading", "time", "uuid", "zmq",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module's source imports.

    `from X import a` counts as importing `X.a`, whether `a` is a module or a name in X, so
    that `from mwcluster import Client` is seen for what it loads. Relative imports are
    resolved against the module's package.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - (node.level - 1)])
                base = f"{anchor}.{base}" if base else anchor
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def all_modules() -> list[tuple[str, Path]]:
    return sorted((module_name(path), path) for path in PACKAGE_DIR.rglob("*.py"))


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    return imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def test_the_walk_finds_the_layers():
    names = [name for name, _ in all_modules()]
    assert "mwcluster.core.state" in names and "mwcluster.core.records" in names
    assert any(within(name, "mwcluster.storage") and name != "mwcluster.storage"
               for name in names)


def layer_of(module: str) -> str | None:
    """The most specific layer a module belongs to."""
    found = [layer for layer in LAYER_RULES if within(module, layer)]
    return max(found, key=len) if found else None


def test_every_module_has_a_layer():
    unplaced = [m for m, _ in all_modules()
                if layer_of(m) is None and m not in ("mwcluster", "mwcluster.errors",
                                                     "mwcluster.nodes")]
    assert unplaced == [], f"modules outside every layer (add them to LAYER_RULES): {unplaced}"


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_layers_import_only_what_they_may(layer):
    allowed = (*LAYER_RULES[layer], *BASE)
    wrong = []
    for module, path in all_modules():
        if layer_of(module) != layer:
            continue
        for line, name in imports_of(module, path):
            if within(name, "mwcluster") and not any(within(name, ok) for ok in allowed):
                wrong.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {name}")
    assert not wrong, (f"{layer} may import only {', '.join(allowed)}:\n  "
                       + "\n  ".join(wrong))


def module_of(name: str, modules: set[str]) -> str | None:
    """The mwcluster module an imported dotted name lives in (`from m import f` names m.f)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = dict(all_modules())
    names = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for _line, name in imports_of(module, path):
            target = module_of(name, names)
            # a package's __init__ that imports its own modules (to register or re-export
            # them) is not a cycle with them: importing a submodule runs the __init__ first,
            # but the submodule does not use it
            if target and target != module and not within(module, target):
                edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    found = cycles(import_graph())
    assert found == [], "import circles (break them with a seam, not a late import):\n  " + \
        "\n  ".join(" <-> ".join(group) for group in found)


def test_the_cycle_finder_finds_a_circle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for module, path in all_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mwcluster"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        wrong.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno} "
                                     f"imports {node.module}.{alias.name}")
    assert wrong == [], "private names are their module's own:\n  " + "\n  ".join(wrong)


def test_the_core_does_no_io_and_reads_no_clock_or_randomness():
    wrong = []
    for module, path in all_modules():
        if not within(module, "mwcluster.core"):
            continue
        for line, name in imports_of(module, path):
            if any(within(name, impure) for impure in IMPURE_FOR_CORE):
                wrong.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {name}")
    assert not wrong, ("the core must stay pure (time and ids come in as arguments):\n  "
                       + "\n  ".join(wrong))


# --- the import reader itself ----------------------------------------------------------------

SAMPLE = """
import os, mwcluster.wire.protocol as proto
from mwcluster import Client
from . import values
from .keys import check_key
from .. import engine
from ..storage.journal import Journal

def later():
    from mwcluster.nodes import master

if TYPE_CHECKING:
    from mwcluster.cli import main
"""


def test_imported_names_resolves_relative_and_nested_imports():
    names = [name for _, name in imported_names(SAMPLE, "mwcluster.core.records", False)]
    assert sorted(names) == sorted([
        "os", "mwcluster.wire.protocol", "mwcluster.Client", "mwcluster.core.values",
        "mwcluster.core.keys.check_key", "mwcluster.engine",
        "mwcluster.storage.journal.Journal", "mwcluster.nodes.master", "mwcluster.cli.main",
    ])


def test_relative_imports_in_a_package_init_resolve_from_the_package():
    names = [name for _, name in imported_names("from . import keys\nfrom .x import y\n",
                                                "mwcluster.core", True)]
    assert names == ["mwcluster.core.keys", "mwcluster.core.x.y"]


def test_within_matches_whole_components():
    assert within("mwcluster.core", "mwcluster.core")
    assert within("mwcluster.core.state", "mwcluster.core")
    assert not within("mwcluster.corefake", "mwcluster.core")
    assert not within("mwcluster.clients", "mwcluster.cli")


# --- the layout as docs/architecture.md draws it ------------------------------------------


def documented_modules() -> set[str]:
    """The module files the "Layout" tree of docs/architecture.md names, as paths below
    mwcluster/ (a folder line `name/` opens a package for the lines indented below it)."""
    text = (PACKAGE_DIR.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    stack: list[tuple[int, str]] = []
    found = set()
    for line in block.splitlines():
        words = line.split()
        if not words:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if words[0].endswith("/"):
            stack.append((indent, words[0].rstrip("/")))
            words = words[1:]
        if not stack or stack[0][1] != "mwcluster":
            continue                                  # tests/, not the package
        where = "/".join(name for _, name in stack[1:])   # below mwcluster/
        for word in words:
            word = word.rstrip(",")
            if word.endswith(".py") and word.replace(".py", "").isidentifier():
                found.add(f"{where}/{word}" if where else word)
    return found


def test_the_layout_in_architecture_md_names_every_module_where_it_is():
    actual = {str(path.relative_to(PACKAGE_DIR)) for path in PACKAGE_DIR.rglob("*.py")
              if path.name not in ("__init__.py", "__main__.py")
              and not within(module_name(path), "mwcluster.cli")
              and not within(module_name(path), "mwcluster.testing.simulation")}
    # the cli's and the simulation's modules are described there as a whole
    documented = {m for m in documented_modules()
                  if not m.startswith(("cli/", "testing/simulation/"))}
    assert sorted(actual - documented) == [], "modules docs/architecture.md does not show"
    assert sorted(documented - actual - {"__init__.py"}) == [], "shown but not in the tree"


def test_no_module_passes_600_lines():
    long = {str(path.relative_to(PACKAGE_DIR)): n for path in PACKAGE_DIR.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600}
    assert long == {}, f"split these (the house style keeps modules under about 600): {long}"
