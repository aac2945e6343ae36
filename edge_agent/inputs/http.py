"""A small HTTP endpoint on the site's LAN where a driver's app posts an unlock token
(off by default: ``[inputs.http] enabled = true``).

``POST /v1/unlock`` with ``{"connector": 1, "token": "v4.public…"}`` answers 200 with the
decision (``status``, ``reason``, ``session_id``), 400 for a malformed request, 404/405
otherwise. HTTP/1.1, one request per connection, bounded sizes: this is a LAN door, not a
web server, and the standard library has no async HTTP server.

Anyone on the LAN can connect, so the door has bounds (``[inputs.http]``, docs/edge.md):

- at most ``max_connections`` are served at once; one more is answered 503 at once and
  closed, so a flood of idle connections holds no more descriptors than the cap. The cap is
  also kept :data:`FD_RESERVE` below the process's open-file limit (``RLIMIT_NOFILE``): the
  store, the buses, the MQTT link and the control socket always find a descriptor;
- the request line and headers must arrive within ``header_timeout_s`` of the accept, the
  body within ``body_timeout_s`` of the headers. These are deadlines, not idle timers: a
  client dribbling one byte a second is cut like a silent one (slowloris);
- an ``accept()`` the kernel refuses for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
  is retried with back-off, not in a loop; refused accepts and turned-away connections are
  logged once when they begin and once, with their count, when they end (STYLE.md §6) —
  asyncio's own server logs every refused accept with a traceback, once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec

from edge_agent.auth.authorizer import Credential, Token
from edge_agent.backoff import Backoff, Retries
from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 8 * 1024
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_HEADER_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 5.0
#: Sending the (small) answer and closing: a client that never reads does not keep its slot.
WRITE_TIMEOUT_S = 5.0
#: Descriptors kept for the rest of the agent when the cap is fitted to RLIMIT_NOFILE: the
#: interpreter and its libraries, SQLite (database, WAL, shm), one per Modbus bus, the MQTT
#: link, credential readers, the control socket and its clients, with room to spare.
FD_RESERVE = 64
#: Connections waiting in the kernel for an accept (the kernel caps it at somaxconn).
LISTEN_BACKLOG = 128
#: Accepting again while out of descriptors or buffers: 25-50 ms, doubling to 0.5-1 s.
ACCEPT_RETRY = Backoff(initial_s=0.05, max_s=1.0)
#: accept() errors that say "no resources now" (the asyncio server's list): retry later.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: The decision path, answering with a struct (edge_agent/control/messages.py's StartAnswer).
PresentWithAnswer = Callable[[Credential, int], Awaitable[msgspec.Struct]]


@dataclass(frozen=True)
class HttpLimits:
    """The endpoint's bounds (``[inputs.http]`` in the agent's config)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


def connection_cap(configured: int, nofile_soft: int) -> int:
    """The cap in force: ``configured``, lowered so that the endpoint's connections and
    :data:`FD_RESERVE` fit in the soft open-file limit ``nofile_soft``; never below 1."""
    if nofile_soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, nofile_soft - FD_RESERVE))


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


#: The answer to a connection over the cap, sent without waiting (it fits any socket buffer).
_BUSY = _response(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "busy"})


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, int]:
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
    return method, target, length


async def _read_request(reader: asyncio.StreamReader, limits: HttpLimits) -> tuple[str, str, bytes]:
    try:
        async with asyncio.timeout(limits.header_timeout_s):
            method, target, length = await _read_head(reader)
    except TimeoutError:
        raise HttpProblem(HTTPStatus.REQUEST_TIMEOUT, "headers not received in time") from None
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            body = await reader.readexactly(length)
    except TimeoutError:
        raise HttpProblem(HTTPStatus.REQUEST_TIMEOUT, "body not received in time") from None
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


class _Refusals:
    """Refusals of one kind: the first is logged, then only counted; when they end, one line
    with the count and how long they lasted. No line per refusal: a flood writes two lines."""

    def __init__(self, level: int, began: str, ended: str) -> None:
        self._level = level
        self._began = began
        self._ended = ended
        self.count = 0
        self._since = 0.0

    def refused(self, detail: object) -> None:
        if self.count == 0:
            self._since = time.monotonic()
            log.log(self._level, self._began, detail)
        self.count += 1

    def end(self) -> None:
        if self.count:
            log.info(self._ended, self.count, time.monotonic() - self._since)
            self.count = 0


class UnlockEndpoint:
    """Serves ``POST /v1/unlock`` on ``host:port`` until cancelled."""

    def __init__(
        self, host: str, port: int, present: PresentWithAnswer, *, limits: HttpLimits | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self._present = present
        self._cap = self.limits.max_connections
        self._active = 0
        self._accept_failures = _Refusals(
            logging.ERROR,
            "LAN unlock endpoint: accept() refused (%s); retrying with back-off",
            "LAN unlock endpoint accepting again: %d accept() calls refused over %.1f s",
        )
        self._turned_away = _Refusals(
            logging.WARNING,
            "LAN unlock endpoint full (%d connections): answering 503 to new ones",
            "LAN unlock endpoint has room again: %d connections turned away over %.1f s",
        )

    async def serve(self, started: Callable[[int], None] | None = None) -> None:
        listeners = await self._listen()
        try:
            nofile_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            self._cap = connection_cap(self.limits.max_connections, nofile_soft)
            if self._cap < self.limits.max_connections:
                log.warning(
                    "LAN unlock endpoint: max_connections %d lowered to %d to fit the open-file "
                    "limit (RLIMIT_NOFILE %d, %d kept for the rest of the agent)",
                    self.limits.max_connections,
                    self._cap,
                    nofile_soft,
                    FD_RESERVE,
                )
            port = int(listeners[0].getsockname()[1])
            log.info(
                "LAN unlock endpoint on %s:%d (at most %d connections)", self.host, port, self._cap
            )
            if started is not None:
                started(port)
            async with asyncio.TaskGroup() as group:
                for listener in listeners:
                    group.create_task(
                        self._accept_loop(listener, group),
                        name=f"http-accept:{listener.getsockname()[0]}",
                    )
        finally:
            for listener in listeners:
                listener.close()

    async def _listen(self) -> list[socket.socket]:
        """Listening sockets for every address ``host`` resolves to (as asyncio's server)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                listener = socket.socket(family, kind, proto)
                listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # "::" and "0.0.0.0" may both be listed: each socket its own family.
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(address)
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)  # noqa: FBT003 -- socket API
        except OSError:
            for listener in listeners:
                listener.close()
            raise
        return listeners

    async def _accept_loop(self, listener: socket.socket, group: asyncio.TaskGroup) -> None:
        """Accept for ever: serve up to the cap, answer 503 beyond it, back off when the
        process (or the system) is out of descriptors or buffers."""
        loop = asyncio.get_running_loop()
        retries = Retries(ACCEPT_RETRY)
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except ConnectionError:
                continue  # ECONNABORTED: the client gave up while queued; its problem alone
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # The connection stays queued in the kernel; Linux keeps reporting the
                # socket readable, so retrying at once would spin.
                self._accept_failures.refused(exc)
                await asyncio.sleep(retries.failed())
                continue
            retries.succeeded()
            self._accept_failures.end()
            if self._active >= self._cap:
                self._turn_away(conn)
                continue
            self._active += 1
            group.create_task(self._connection(conn), name="http-connection")

    def _turn_away(self, conn: socket.socket) -> None:
        try:
            # Non-blocking, both: what the client already sent is read first, so the close
            # is a FIN after the answer rather than a reset that may discard it.
            with contextlib.suppress(BlockingIOError):
                conn.recv(MAX_HEADER_BYTES)
            conn.send(_BUSY)
        except OSError:
            pass
        finally:
            conn.close()
        self._turned_away.refused(self._cap)

    async def _connection(self, conn: socket.socket) -> None:
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEADER_BYTES)
            except OSError:
                conn.close()
                return
            await self._handle(reader, writer)
        finally:
            self._active -= 1
            # Half the cap free again before saying so: a flood that refills each freed slot
            # is still one outage, not a line per slot.
            if self._active <= self._cap // 2:
                self._turned_away.end()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, body = await _read_request(reader, self.limits)
            if target != "/v1/unlock":
                raise HttpProblem(HTTPStatus.NOT_FOUND, f"no route {target}")
            if method != "POST":
                raise HttpProblem(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
            connector, token = _unlock_request(body)
            answer = await self._present(Token(token), connector)
            writer.write(_response(HTTPStatus.OK, msgspec.to_builtins(answer)))
        except HttpProblem as exc:
            writer.write(_response(exc.status, {"ok": False, "error": str(exc)}))
        except AgentError as exc:
            log.error("LAN unlock not decided: %s", exc)
            unavailable = {"ok": False, "error": "not decided"}
            writer.write(_response(HTTPStatus.SERVICE_UNAVAILABLE, unavailable))
        except OSError:
            pass  # the client went away; nothing to answer
        except Exception:
            # A defect must not end the endpoint's TaskGroup (and with it the agent's).
            log.exception("LAN unlock request failed: unexpected error")
            writer.write(_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False}))
        finally:
            await _finish(writer)


async def _finish(writer: asyncio.StreamWriter) -> None:
    """Send what was written and close, within :data:`WRITE_TIMEOUT_S`; the descriptor is
    released whatever the client does (abort is a no-op once the close has completed)."""
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.transport.abort()
