"""Layering (STYLE.md): the core imports no Flask and no Redis; config, errors and clock import nothing of
the package; imports flow one way (web -> service -> auth, stores.base, core).

The import graph is read from the source with ``ast`` (no module is executed), transitively within the
package. A module's edges are every import it makes, at the top or inside a function (a lazy import is
still a dependency). Importing ``token_service.a.b`` also runs ``token_service/a/__init__.py``; for
those implicit parents only the imports made at import time count (``stores/__init__.py`` imports
the Redis driver lazily, inside the factory the core never calls). The root ``token_service/__init__.py``
is ``create_app``, the one wiring point, and is left out; a subprocess check imports the core with the
root package stubbed, to confirm at run time what the graph says.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "token_service"
PACKAGE_DIR = ROOT / PACKAGE

CORE = [
    "config", "errors", "clock", "claims", "keys", "tokens", "apikeys", "revocation", "audit", "audit_chain",
    "stores.base", "stores.cursor", "stores.memory", "auth.base", "service",
]
LEAVES = ["config", "errors", "clock"]
FORBIDDEN = ("flask", "flask_limiter", "werkzeug", "redis", "hiredis")


def module_file(name: str) -> Path | None:
    """The source file of ``token_service.…`` module ``name``, or None when it is not in the package."""
    relative = Path(*name.split("."))
    for candidate in (ROOT / relative.with_suffix(".py"), ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_nodes(tree: ast.AST, import_time_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if import_time_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from … import`` names, relative imports resolved against ``importer``."""
    if not node.level:
        return node.module or ""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


@cache
def direct_imports(name: str, import_time_only: bool = False) -> frozenset[str]:
    """Absolute names of the modules ``name`` imports (submodules named in ``from x import y`` included)."""
    path = module_file(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree, import_time_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.module == "__future__":
            continue
        base = resolve(name, path.name == "__init__.py", node)
        found.add(base)
        for alias in node.names:
            if module_file(f"{base}.{alias.name}") is not None:
                found.add(f"{base}.{alias.name}")
    return frozenset(found)


def implicit_parents(name: str) -> list[str]:
    """The package __init__ modules that importing ``name`` runs, the root package excluded."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def closure(start: str) -> dict[str, str]:
    """Every module reached from ``start``: {module: the module that imported it}, outside modules included."""
    reached: dict[str, str] = {start: ""}
    queue: list[tuple[str, bool]] = [(start, False)] + [(parent, True) for parent in implicit_parents(start)]
    for parent in implicit_parents(start):
        reached.setdefault(parent, start)
    while queue:
        current, import_time_only = queue.pop()
        for imported in direct_imports(current, import_time_only):
            if imported == PACKAGE:
                continue  # the root __init__ is create_app (see the module docstring)
            if imported in reached:
                continue
            reached[imported] = current
            if imported.startswith(PACKAGE + ".") and module_file(imported) is not None:
                queue.append((imported, False))
                for parent in implicit_parents(imported):
                    if parent not in reached:
                        reached[parent] = imported
                        queue.append((parent, True))
    return reached


def chain(reached: dict[str, str], name: str) -> str:
    path = [name]
    while reached.get(path[-1]):
        path.append(reached[path[-1]])
    return " <- ".join(path)


def forbidden_in(reached: dict[str, str]) -> list[str]:
    return sorted(chain(reached, name) for name in reached if name.split(".")[0] in FORBIDDEN)


@pytest.mark.parametrize("module", CORE)
def test_core_module_exists(module: str) -> None:
    assert module_file(f"{PACKAGE}.{module}") is not None


@pytest.mark.parametrize("module", CORE)
def test_core_imports_neither_flask_nor_redis(module: str) -> None:
    reached = closure(f"{PACKAGE}.{module}")
    assert forbidden_in(reached) == []


@pytest.mark.parametrize("module", [m for m in CORE if m != "stores.memory"])
def test_core_names_no_concrete_store_and_no_web_module(module: str) -> None:
    """Only create_app and stores/__init__.py name concrete stores; nothing of the core reaches the web layer."""
    reached = closure(f"{PACKAGE}.{module}")
    bad = [chain(reached, name) for name in reached
           if name in (f"{PACKAGE}.stores.memory", f"{PACKAGE}.stores.redis") or name.startswith(f"{PACKAGE}.web")]
    assert bad == []


LEAF_CASES = LEAVES


@pytest.mark.parametrize("module", LEAF_CASES)
def test_leaves_import_nothing_of_the_package(module: str) -> None:
    imported = direct_imports(f"{PACKAGE}.{module}")
    assert sorted(name for name in imported if name == PACKAGE or name.startswith(PACKAGE + ".")) == []


def test_leaves_import_only_the_standard_library_or_each_other() -> None:
    """Whatever the decision on config -> errors, the leaves stay leaves: no third-party import, no cycle."""
    for module in LEAVES:
        for name in direct_imports(f"{PACKAGE}.{module}"):
            top = name.split(".")[0]
            if top == PACKAGE:
                assert name in {f"{PACKAGE}.{leaf}" for leaf in LEAVES}, (module, name)
            else:
                assert top in sys.stdlib_module_names, (module, name)
    assert direct_imports(f"{PACKAGE}.errors") & {f"{PACKAGE}.config"} == frozenset()


# -- the checker itself ---------------------------------------------------------------------------


def test_the_checker_sees_imports() -> None:
    """Not vacuous: third-party and package imports are found, and the web layer's Flask is caught."""
    assert "jwt" in closure(f"{PACKAGE}.tokens")
    assert "cryptography.hazmat.primitives.asymmetric" in closure(f"{PACKAGE}.keys")
    assert f"{PACKAGE}.claims" in closure(f"{PACKAGE}.tokens")
    assert f"{PACKAGE}.auth" in closure(f"{PACKAGE}.service")
    assert f"{PACKAGE}.auth.api_key" in closure(f"{PACKAGE}.service")  # a lazy import, inside a function
    assert forbidden_in(closure(f"{PACKAGE}.web")) != []


def test_the_checker_resolves_relative_imports() -> None:
    def node(code: str) -> ast.ImportFrom:
        statement = ast.parse(code).body[0]
        assert isinstance(statement, ast.ImportFrom)
        return statement

    assert resolve("token_service.stores.memory", False, node("from .cursor import x")) == "token_service.stores.cursor"
    assert resolve("token_service.stores.memory", False, node("from ..claims import x")) == "token_service.claims"
    assert resolve("token_service.stores", True, node("from .base import x")) == "token_service.stores.base"
    assert resolve("token_service.stores", True, node("from . import memory")) == "token_service.stores"
    assert resolve("token_service.keys", False, node("from jwt import x")) == "jwt"


def test_the_checker_sees_lazy_imports_unless_asked_for_import_time_only() -> None:
    tree = ast.parse("import a\nif True:\n    import b\nclass C:\n    import c\ndef f():\n    import flask\n")
    names = {alias.name for node in _import_nodes(tree, False) for alias in node.names}
    assert names == {"a", "b", "c", "flask"}
    names = {alias.name for node in _import_nodes(tree, True) for alias in node.names}
    assert names == {"a", "b", "c"}


# -- at run time ----------------------------------------------------------------------------------

RUNTIME_PROBE = """
import importlib, json, sys, types
stub = types.ModuleType({package!r})
stub.__path__ = [{package_dir!r}]
sys.modules[{package!r}] = stub  # the root __init__ (create_app) is not run
loaded = {{}}
for module in {modules!r}:
    before = set(sys.modules)
    importlib.import_module({package!r} + "." + module)
    loaded[module] = sorted(set(sys.modules) - before)
print(json.dumps(loaded))
"""


def test_importing_the_core_loads_neither_flask_nor_redis() -> None:
    probe = RUNTIME_PROBE.format(package=PACKAGE, package_dir=str(PACKAGE_DIR), modules=CORE)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    everything = {name for names in loaded.values() for name in names}
    assert sorted(name for name in everything if name.split(".")[0] in FORBIDDEN) == []
    assert f"{PACKAGE}.web" not in everything
    assert f"{PACKAGE}.stores.redis" not in everything
