"""Import directions between the layers, read from the source with `ast` (nothing is imported).

- `mwcluster.core` is pure: it imports only itself and `mwcluster.errors` (so nothing of
  storage, wire, nodes, engine or the CLI), and no standard module for files, sockets,
  threads, processes, the clock or randomness.
- `mwcluster.storage` is bytes in, bytes out: it imports only itself and `mwcluster.errors`
  (so never core or wire: it knows nothing of the cluster model).

Every import statement counts, including those inside functions and `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "mwcluster"

LAYER_RULES = {
    # layer: the mwcluster modules it may import (each with everything below it)
    "mwcluster.core": ("mwcluster.core", "mwcluster.errors"),
    "mwcluster.storage": ("mwcluster.storage", "mwcluster.errors"),
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


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_layers_import_only_what_they_may(layer):
    allowed = LAYER_RULES[layer]
    wrong = []
    for module, path in all_modules():
        if not within(module, layer):
            continue
        for line, name in imports_of(module, path):
            if within(name, "mwcluster") and not any(within(name, ok) for ok in allowed):
                wrong.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {name}")
    assert not wrong, (f"{layer} may import only {', '.join(allowed)}:\n  "
                       + "\n  ".join(wrong))


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
    assert not within("mwcluster.cli_master", "mwcluster.cli")
