"""Reads a package's syntax trees for third-party exception types caught outside their
library's translation boundary (used by tests/edge and tests/cloud test_error_boundaries.py).

A catch is an ``except`` clause naming the type, or ``contextlib.suppress(...)`` given it;
names are resolved through the module's imports, so ``from redis.exceptions import
RedisError as E`` then ``except E`` counts as redis.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path


def aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted module path it stands for."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _caught_expressions(tree: ast.Module) -> Iterable[tuple[int, ast.expr]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            for expr in types:
                yield node.lineno, expr
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name is not None and name.split(".")[-1] == "suppress":
                for expr in node.args:
                    yield node.lineno, expr


def caught_libraries(source: str, libraries: Iterable[str]) -> list[tuple[int, str]]:
    """(line, library) for each exception type of a watched library the source catches."""
    watched = set(libraries)
    tree = ast.parse(source)
    names = aliases(tree)
    found = []
    for line, expr in _caught_expressions(tree):
        name = dotted(expr)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        resolved = names.get(head, head) + (f".{rest}" if rest else "")
        library = resolved.split(".")[0]
        if library in watched:
            found.append((line, library))
    return found


def imported_exceptions(source: str, libraries: Iterable[str]) -> list[tuple[str, str]]:
    """(library, name) for each exception class the source imports from a watched library
    (``from sqlalchemy.exc import IntegrityError``): a module that imports one can test for
    it (``isinstance``, a supervisor's ``expected``) without an ``except``."""
    watched = set(libraries)
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        library = node.module.split(".")[0]
        if library not in watched:
            continue
        module = importlib.import_module(node.module)
        for alias in node.names:
            value = getattr(module, alias.name, None)
            if isinstance(value, type) and issubclass(value, BaseException):
                found.append((library, alias.name))
    return found


def inside(relative: str, boundary: tuple[str, ...]) -> bool:
    """Whether ``relative`` (a path under the package) is one of ``boundary``'s files, or
    under one of its directories (an entry ending in ``/``)."""
    return any(relative == b or (b.endswith("/") and relative.startswith(b)) for b in boundary)


def catches_outside(package: Path, boundaries: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every catch of a watched library's error outside that library's boundary."""
    outside = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        source = path.read_text("utf-8")
        for line, library in caught_libraries(source, boundaries):
            if not inside(relative, boundaries[library]):
                outside.append(f"{package.name}/{relative}:{line} catches a {library} error")
        for library, name in imported_exceptions(source, boundaries):
            if not inside(relative, boundaries[library]):
                outside.append(f"{package.name}/{relative} imports {library}'s {name}")
    return outside
