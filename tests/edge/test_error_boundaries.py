"""Third-party errors are translated at one boundary per library (edge_agent/errors.py).

Every ``except`` clause of :mod:`edge_agent` is read (its syntax tree, imports resolved): a
clause that names an exception of pymodbus, paho-mqtt or sqlite3 outside that library's
boundary fails the test, and so does importing pymodbus or paho anywhere else. Within the
boundary, the clause that translates must cover every exception the library defines (as
httpx's ``test_httpcore_all_exceptions_mapped`` does for httpcore).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pymodbus.exceptions

EDGE = Path(__file__).resolve().parents[2] / "edge_agent"

#: library -> the modules (relative to edge_agent/) where its errors are caught and translated.
BOUNDARIES = {
    "pymodbus": ("meters/bus.py",),
    "paho": ("sync/link.py",),
    "websockets": ("ocpp/link.py",),
    # The store, and its helper for queries run elsewhere (edge_agent.store.db.translated).
    "sqlite3": ("store/",),
}


def _aliases(tree: ast.Module) -> dict[str, str]:
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


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def caught_libraries(source: str) -> list[tuple[int, str]]:
    """(line, library) for each exception type of a watched library an ``except`` names."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler) or node.type is None:
            continue
        types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        for expr in types:
            dotted = _dotted(expr)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
            library = resolved.split(".")[0]
            if library in BOUNDARIES:
                found.append((node.lineno, library))
    return found


def imported_libraries(source: str) -> set[str]:
    return {module.split(".")[0] for module in _aliases(ast.parse(source)).values()}


def _inside(relative: str, boundary: tuple[str, ...]) -> bool:
    return any(relative == b or (b.endswith("/") and relative.startswith(b)) for b in boundary)


def test_third_party_errors_are_caught_only_at_their_boundary() -> None:
    outside = []
    for path in sorted(EDGE.rglob("*.py")):
        relative = path.relative_to(EDGE).as_posix()
        for line, library in caught_libraries(path.read_text("utf-8")):
            if not _inside(relative, BOUNDARIES[library]):
                outside.append(f"edge_agent/{relative}:{line} catches a {library} error")
    assert outside == []


def test_pymodbus_and_paho_are_imported_only_at_their_boundary() -> None:
    outside = []
    for path in sorted(EDGE.rglob("*.py")):
        relative = path.relative_to(EDGE).as_posix()
        libraries = {"pymodbus", "paho", "websockets"}
        for library in imported_libraries(path.read_text("utf-8")) & libraries:
            if not _inside(relative, BOUNDARIES[library]):
                outside.append(f"edge_agent/{relative} imports {library}")
    assert outside == []


def test_the_checker_sees_a_catch_outside_the_boundary() -> None:
    source = (
        "import sqlite3 as db\nfrom pymodbus.exceptions import ModbusIOException as E\n"
        "try:\n    pass\nexcept (db.OperationalError, E, ValueError):\n    pass\n"
    )
    assert caught_libraries(source) == [(5, "sqlite3"), (5, "pymodbus")]
    assert not _inside("sessions/controller.py", BOUNDARIES["sqlite3"])
    assert _inside("store/writer.py", BOUNDARIES["sqlite3"])


def test_every_pymodbus_exception_is_translated_by_the_bus() -> None:
    """meters/bus.py catches ModbusException: every exception pymodbus defines must be one,
    or a new one would escape the poller untranslated."""
    source = (EDGE / "meters" / "bus.py").read_text("utf-8")
    assert "except ModbusException" in source
    classes = inspect.getmembers(pymodbus.exceptions, inspect.isclass)
    defined = [c for _, c in classes if issubclass(c, Exception)]
    assert defined
    escaping = [
        c.__name__ for c in defined if not issubclass(c, pymodbus.exceptions.ModbusException)
    ]
    assert escaping == []
