"""A small HTTP endpoint on the site's LAN where a driver's app posts an unlock token
(off by default: ``[inputs.http] enabled = true``).

``POST /v1/unlock`` with ``{"connector": 1, "token": "v4.public…"}`` answers 200 with the
decision (``status``, ``reason``, ``session_id``), 400 for a malformed request, 404/405
otherwise. HTTP/1.1, one request per connection, bounded sizes: this is a LAN door, not a
web server, and the standard library has no async HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from edge_agent.auth.authorizer import Credential, Token
from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 8 * 1024
READ_TIMEOUT_S = 5.0

PresentWithAnswer = Callable[[Credential, int], Awaitable[dict[str, Any]]]


class HttpProblem(Exception):
    """An HTTP error answer, raised to leave the handler."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _response(status: HTTPStatus, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpProblem(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large") from None
    except asyncio.IncompleteReadError:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "incomplete request") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target = parts[0], parts[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
    if not 0 <= length <= MAX_BODY_BYTES:
        raise HttpProblem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length") from None
    return method, target, body


def _unlock_request(body: bytes) -> tuple[int, str]:
    try:
        data = json.loads(body)
    except ValueError:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
    if not isinstance(data, dict):
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    connector, token = data.get("connector"), data.get("token")
    if type(connector) is not int or not isinstance(token, str):
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "need connector (integer) and token (string)")
    return connector, token


class UnlockEndpoint:
    """Serves ``POST /v1/unlock`` on ``host:port`` until cancelled."""

    def __init__(self, host: str, port: int, present: PresentWithAnswer) -> None:
        self.host = host
        self.port = port
        self._present = present

    async def serve(self, started: Callable[[int], None] | None = None) -> None:
        server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        async with server:
            port = int(server.sockets[0].getsockname()[1])
            log.info("LAN unlock endpoint on %s:%d", self.host, port)
            if started is not None:
                started(port)
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                method, target, body = await _read_request(reader)
            if target != "/v1/unlock":
                raise HttpProblem(HTTPStatus.NOT_FOUND, f"no route {target}")
            if method != "POST":
                raise HttpProblem(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
            connector, token = _unlock_request(body)
            answer = await self._present(Token(token), connector)
            writer.write(_response(HTTPStatus.OK, answer))
        except HttpProblem as exc:
            writer.write(_response(exc.status, {"ok": False, "error": str(exc)}))
        except TimeoutError:
            writer.write(_response(HTTPStatus.REQUEST_TIMEOUT, {"ok": False, "error": "slow"}))
        except AgentError as exc:
            log.error("LAN unlock not decided: %s", exc)
            unavailable = {"ok": False, "error": "not decided"}
            writer.write(_response(HTTPStatus.SERVICE_UNAVAILABLE, unavailable))
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
