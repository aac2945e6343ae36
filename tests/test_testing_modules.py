"""The fakes a package ships (``edge_agent/testing.py``, ``protocols/testing.py``) are for
tests: no other module of a shipped package imports a ``testing`` module (issue 14, item 5).

The walk reads each module's syntax tree, so an import under ``TYPE_CHECKING`` or inside a
function counts as much as one at the top. A ``testing`` module may import another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The packages that ship (the wheel's); tests/ and bench/ may import the fakes.
PACKAGES = ("protocols", "edge_agent", "cloud", "firmware_sim")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """Every (line, dotted module) the tree imports, relative imports resolved against
    ``module``; ``from x import y`` yields ``x.y`` (``y`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _testing_imports(path: Path) -> list[str]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in _imported(tree, module, is_package=path.name == "__init__.py")
        if "testing" in name.split(".")
    ]


def _shipped_modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.stem != "testing"
    )


def test_no_shipped_module_imports_a_testing_module() -> None:
    modules = _shipped_modules()
    assert len(modules) > 100  # the walk found the packages
    offenders = [line for path in modules for line in _testing_imports(path)]
    assert not offenders, "production code imports a testing module:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("from edge_agent.testing import FakeClock\n", "edge_agent/x.py"),
        ("from edge_agent import testing\n", "edge_agent/x.py"),
        ("import protocols.testing as t\n", "cloud/x.py"),
        ("from . import testing\n", "edge_agent/x.py"),
        ("from ..testing import FakeRelay\n", "edge_agent/relay/x.py"),
        ("if TYPE_CHECKING:\n    from protocols.testing import telemetry\n", "cloud/x.py"),
        ("def f() -> None:\n    from edge_agent.testing import Acker\n", "bench/x.py"),
    ],
)
def test_the_walk_sees_every_form_of_import(source: str, where: str) -> None:
    path = ROOT / where
    tree = ast.parse(source)
    names = [name for _, name in _imported(tree, _module_name(path), is_package=False)]
    assert any("testing" in name.split(".") for name in names), names


def test_a_module_named_like_testing_is_not_a_testing_module() -> None:
    tree = ast.parse("from edge_agent import testing_rules\nimport protocols.attesting\n")
    names = [name for _, name in _imported(tree, "edge_agent.x", is_package=False)]
    assert not any("testing" in name.split(".") for name in names), names
