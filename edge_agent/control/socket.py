"""The local control socket: JSON lines over a Unix domain socket, one request, one answer.

The field CLI (docs/cli.md) and the tests use it for live actions beside the running
daemon. Requests are objects with a ``cmd``: ``status``, ``start`` (with ``connector`` and
one of ``id_tag``, ``token``, ``pin``), ``stop`` (``connector``, optional ``reason``),
``relay_test`` (``connector``), ``clear_fault`` (``connector``); and for the technician's CLI
``meter_read``, ``meter_raw``, ``relay_state``, ``relay``, ``relay_check``, ``sync_status``,
``sync_flush``, ``ocpp_status``. Each is a typed struct (:mod:`edge_agent.control.messages`),
answered by the handler registered for it (:mod:`edge_agent.control.table`). Answers always
carry ``ok``; a bad request gets ``ok: false`` and an ``error``, never a dropped connection.

The socket file is created mode 0600 in a directory only the agent's user can enter: anyone
who can connect can switch the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

#: One request line in, one answer line out (:meth:`edge_agent.control.table.Dispatcher.answer`).
Answerer = Callable[[bytes], Awaitable[bytes]]
#: A request line longer than this is refused (a client bug, or someone probing).
MAX_LINE_BYTES = 64 * 1024


class ControlServer:
    """``async with ControlServer(path, answer):`` serves until the block exits."""

    def __init__(self, path: Path, answer: Answerer) -> None:
        self.path = path
        self._answer = answer
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed agent
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_LINE_BYTES
        )
        self.path.chmod(0o600)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(await self._answer(line) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("control client dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def request(path: Path, message: dict[str, Any], *, timeout_s: float = 10.0) -> Any:
    """Send one request to the agent at ``path`` and return its answer (a client helper)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE_BYTES)
        try:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            return json.loads(await reader.readline())
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
