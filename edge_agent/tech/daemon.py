"""Talking to the running agent through its control socket (:mod:`edge_agent.control`).

A command first asks whether the agent runs: if it answers, live actions go through it (it
owns the bus and the relay); if its socket is missing or refuses, the agent is stopped and
the command may use the hardware directly, saying so.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edge_agent.control import request
from edge_agent.errors import ControlError

#: Long enough for a relay test (close, wait for power, open, wait for it to stop).
DEFAULT_TIMEOUT_S = 15.0


async def aask(socket_path: Path, message: dict[str, Any], *, timeout_s: float = 5.0) -> Any:
    """The agent's answer to ``message``, or None when no agent listens on ``socket_path``."""
    try:
        return await request(socket_path, message, timeout_s=timeout_s)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except PermissionError as exc:
        raise ControlError(
            f"cannot use the agent's control socket {socket_path}: permission denied "
            "(run as the agent's user, or with sudo)",
            cmd=str(message.get("cmd")),
        ) from exc
    except TimeoutError as exc:
        raise ControlError(
            f"the agent did not answer {message.get('cmd')!r} within {timeout_s:.0f} s "
            "(is it hung? see `chargemitra-agent doctor`)",
            cmd=str(message.get("cmd")),
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ControlError(
            f"control socket {socket_path}: {exc}", cmd=str(message.get("cmd"))
        ) from exc


async def astatus(socket_path: Path) -> dict[str, Any] | None:
    """The agent's ``status`` answer, or None when it is not running."""
    answer = await aask(socket_path, {"cmd": "status"}, timeout_s=5.0)
    return answer if isinstance(answer, dict) else None


async def acall(
    socket_path: Path, message: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """Ask the running agent; raise :class:`ControlError` when it is not running or says no."""
    answer = await aask(socket_path, message, timeout_s=timeout_s)
    if answer is None:
        raise ControlError("the agent is not running", cmd=str(message.get("cmd")))
    if not isinstance(answer, dict):
        raise ControlError(f"the agent answered {answer!r}", cmd=str(message.get("cmd")))
    if not answer.get("ok") and "error" in answer:
        raise ControlError(f"the agent refused: {answer['error']}", cmd=str(message.get("cmd")))
    return answer


def ask(socket_path: Path, message: dict[str, Any], *, timeout_s: float = 5.0) -> Any:
    return asyncio.run(aask(socket_path, message, timeout_s=timeout_s))


def status(socket_path: Path) -> dict[str, Any] | None:
    return asyncio.run(astatus(socket_path))


def call(
    socket_path: Path, message: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    return asyncio.run(acall(socket_path, message, timeout_s=timeout_s))
