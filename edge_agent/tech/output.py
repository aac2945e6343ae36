"""How every technician command answers: a table for people or JSON for scripts, an exit
code, and one line on stderr for anything that went wrong.

Exit codes (docs/cli.md): 0 all good, 1 a warning (the command ran, something deserves a
look), 2 a failure or bad input. Errors of the :mod:`edge_agent.errors` tree are turned into
exit code 2 and one line in :func:`boundary`, the one place this happens: no traceback
reaches a technician.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from edge_agent.errors import AgentError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
EXIT_WARN = 1
EXIT_FAIL = 2

P = ParamSpec("P")
R = TypeVar("R")

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document (for scripts) instead of text."
)


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: object) -> str:
    return json.dumps(data, default=_default, sort_keys=False)


def console() -> Console:
    """A rich console on stdout (imported lazily: rich is an edge extra)."""
    from rich.console import Console  # noqa: PLC0415 -- keep start-up light

    return Console(highlight=False, soft_wrap=False)


def escape(text: object) -> str:
    """``text`` with rich's markup brackets escaped (errors quote ``[Errno 2]``…)."""
    from rich.markup import escape as rich_escape  # noqa: PLC0415

    return rich_escape(str(text))


def emit(as_json: bool, data: dict[str, Any], human: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``human`` to print it for people."""
    if as_json:
        click.echo(dumps(data))
    else:
        human()


def note(text: str) -> None:
    """A remark about how the command worked (e.g. that it used the bus directly): stderr,
    so ``--json`` output stays one clean document."""
    click.echo(f"note: {text}", err=True)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 2 (used for refusals decided by the command itself)."""
    click.echo(f"chargemitra-agent: {message}", err=True)
    sys.exit(EXIT_FAIL)


def boundary(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the agent's errors into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AgentError as exc:
            # A multi-line message would break "one clear line": keep the first.
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fail(text)

    return wrapper
