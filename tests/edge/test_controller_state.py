"""No module but the connector's controller assigns its state (the machine's output), its
fail-safe watch or its view of the relay: a technician's hold goes through the machine's
events (edge_agent/sessions/machine.py), applied by edge_agent/sessions/controller.py."""

from __future__ import annotations

import ast
from pathlib import Path

EDGE = Path(__file__).resolve().parents[2] / "edge_agent"
OWNED = frozenset({"state", "watch", "relay_closed"})
OWNER = "sessions/controller.py"


def assigned_attributes(source: str) -> list[tuple[int, str]]:
    """(line, attribute) for every assignment to an attribute named in :data:`OWNED`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            found += [
                (t.lineno, t.attr)
                for t in elements
                if isinstance(t, ast.Attribute) and t.attr in OWNED
            ]
    return found


def test_only_the_controller_assigns_a_connectors_state() -> None:
    outside = [
        f"edge_agent/{path.relative_to(EDGE).as_posix()}:{line} assigns .{attr}"
        for path in sorted(EDGE.rglob("*.py"))
        if path.relative_to(EDGE).as_posix() != OWNER
        for line, attr in assigned_attributes(path.read_text("utf-8"))
    ]
    assert outside == []


def test_the_check_sees_an_assignment() -> None:
    source = "controller.state = x\na.b, c.watch = 1, 2\nself.relay_closed: bool = False\n"
    assert assigned_attributes(source) == [(1, "state"), (2, "watch"), (3, "relay_closed")]
    assert assigned_attributes((EDGE / OWNER).read_text("utf-8"))  # the owner does assign
