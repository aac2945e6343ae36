"""Third-party errors are translated at one boundary per library (edge_agent/errors.py).

Every ``except`` clause and ``suppress`` of :mod:`edge_agent` is read (the walker in
tests/support/error_boundaries.py resolves imports): a clause that names an exception of
pymodbus, paho-mqtt, websockets or sqlite3 outside that library's boundary fails the test,
and so does importing pymodbus or paho anywhere else but in the fakes (testing.py). Within
the boundary, the clause that translates must cover every exception the library defines (as
httpx's ``test_httpcore_all_exceptions_mapped`` does for httpcore).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pymodbus.exceptions

from tests.support.error_boundaries import aliases, catches_outside, inside
from tests.support.error_boundaries import caught_libraries as _caught

EDGE = Path(__file__).resolve().parents[2] / "edge_agent"

#: library -> the modules (relative to edge_agent/) where its errors are caught and translated.
BOUNDARIES = {
    "pymodbus": ("meters/bus.py",),
    "paho": ("sync/link.py",),
    "websockets": ("ocpp/link.py",),
    # The store, and its helper for queries run elsewhere (edge_agent.store.db.translated).
    "sqlite3": ("store/",),
}


def caught_libraries(source: str) -> list[tuple[int, str]]:
    return _caught(source, BOUNDARIES)


def imported_libraries(source: str) -> set[str]:
    return {module.split(".")[0] for module in aliases(ast.parse(source)).values()}


def test_third_party_errors_are_caught_only_at_their_boundary() -> None:
    assert catches_outside(EDGE, BOUNDARIES) == []


def test_pymodbus_and_paho_are_imported_only_at_their_boundary() -> None:
    outside = []
    for path in sorted(EDGE.rglob("*.py")):
        relative = path.relative_to(EDGE).as_posix()
        if relative == "testing.py":
            # The fakes play the other end (a Modbus server, the ingest stand-in); the agent
            # never imports them (tests/test_testing_modules.py).
            continue
        libraries = {"pymodbus", "paho", "websockets"}
        for library in imported_libraries(path.read_text("utf-8")) & libraries:
            if not inside(relative, BOUNDARIES[library]):
                outside.append(f"edge_agent/{relative} imports {library}")
    assert outside == []


def test_the_checker_sees_a_catch_outside_the_boundary() -> None:
    source = (
        "import sqlite3 as db\nfrom pymodbus.exceptions import ModbusIOException as E\n"
        "try:\n    pass\nexcept (db.OperationalError, E, ValueError):\n    pass\n"
    )
    assert caught_libraries(source) == [(5, "sqlite3"), (5, "pymodbus")]
    assert not inside("sessions/controller.py", BOUNDARIES["sqlite3"])
    assert inside("store/writer.py", BOUNDARIES["sqlite3"])


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
