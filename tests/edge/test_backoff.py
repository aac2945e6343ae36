"""The edge's one retry schedule (edge_agent/backoff.py): grows, caps, jitters, starts over."""

from __future__ import annotations

import ast
from pathlib import Path

from edge_agent.backoff import Backoff, Retries

EDGE = Path(__file__).resolve().parents[2] / "edge_agent"


def test_retries_grow_to_the_cap_and_start_over_after_a_success() -> None:
    retries = Retries(Backoff(initial_s=1.0, max_s=4.0), rand=lambda: 1.0)
    assert [retries.failed() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert retries.failures == 4
    retries.succeeded()
    assert retries.failures == 0
    assert retries.failed() == 1.0


def test_half_of_each_delay_is_jitter() -> None:
    low = Retries(Backoff(initial_s=2.0, max_s=8.0), rand=lambda: 0.0)
    high = Retries(Backoff(initial_s=2.0, max_s=8.0), rand=lambda: 1.0)
    assert [(low.failed(), high.failed()) for _ in range(3)] == [(1, 2), (2, 4), (4, 8)]


def test_no_edge_module_draws_its_own_jitter() -> None:
    """Every reconnect and retry loop waits by Retries: only the one schedule uses random."""
    drawing = []
    for path in sorted(EDGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if "random" in names:
                drawing.append(str(path.relative_to(EDGE)))
    assert drawing == ["backoff.py"]
