"""The control interface: a small JSON-over-HTTP server on loopback, and its client.

HTTP/1.1, one request per connection, JSON bodies; stdlib only. The routes (see
``docs/sim.md``)::

    GET    /state                       everything: clock, relay, EV, meter values, faults
    POST   /plug         {"profile": "7.4kw", "soc": 0.2, "capacity_wh": 40000}
    POST   /unplug
    POST   /relay        {"closed": true}
    POST   /faults       {"kind": "timeout", "unit": 1, "for_s": 10, ...}
    DELETE /faults[/KIND][?unit=N]      switch faults off
    POST   /tap          {"tag": "0A1B2C3D4E"}
    POST   /keys         {"keys": "123456#"}
    POST   /clock/advance {"seconds": 600}   (only on a manual clock)

Errors come back as ``{"error": "...", "field": "..."}`` with 400 (bad input), 404 (no
such route) or 409 (not possible on this simulator).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from types import TracebackType
from typing import Any, Protocol

from firmware_sim.errors import ConfigError, ControlError, EndpointError, SimError
from firmware_sim.serving import ConnectionTasks

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
}


class Controllable(Protocol):
    """What the control interface drives (implemented by :class:`~firmware_sim.simsite.SimSite`)."""

    def snapshot(self) -> dict[str, Any]: ...
    def plug(self, profile: str, *, soc: float = 0.2, capacity_wh: float = 40_000.0) -> None: ...
    def unplug(self) -> None: ...
    def set_relay(self, closed: bool) -> None: ...
    def set_fault(self, kind: str, **params: Any) -> dict[str, Any]: ...
    def clear_faults(self, kind: str | None = None, unit: int | None = None) -> int: ...
    def tap(self, tag: str) -> None: ...
    def keys(self, text: str) -> None: ...
    def advance(self, seconds: float) -> None: ...


class BadRequest(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def _field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if name not in body or body[name] is None:
        if default is ...:
            raise BadRequest(400, f"missing field {name!r}", name)
        return default
    value = body[name]
    # JSON numbers: accept an int where a float is wanted, never a bool for a number.
    if isinstance(value, bool) and kind is not bool:
        raise BadRequest(400, f"field {name!r} has the wrong type", name)
    if not isinstance(value, kind):
        raise BadRequest(400, f"field {name!r} has the wrong type", name)
    return value


def route(target: Controllable, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run one control request; the pure part of the server (raises BadRequest/SimError)."""
    url = urllib.parse.urlsplit(path)
    parts = [p for p in url.path.split("/") if p]
    query = dict(urllib.parse.parse_qsl(url.query))
    number = (int, float)
    match method, parts:
        case "GET", ["state"]:
            return target.snapshot()
        case "POST", ["plug"]:
            target.plug(
                _field(body, "profile", str, "7.4kw"),
                soc=float(_field(body, "soc", number, 0.2)),
                capacity_wh=float(_field(body, "capacity_wh", number, 40_000.0)),
            )
        case "POST", ["unplug"]:
            target.unplug()
        case "POST", ["relay"]:
            target.set_relay(_field(body, "closed", bool))
        case "POST", ["faults"]:
            params = {k: v for k, v in body.items() if k != "kind"}
            return {"fault": target.set_fault(_field(body, "kind", str), **params)}
        case "DELETE", ["faults", *rest] if len(rest) <= 1:
            try:
                unit = int(query["unit"]) if "unit" in query else None
            except ValueError:
                raise BadRequest(400, "unit must be an integer", "unit") from None
            return {"cleared": target.clear_faults(rest[0] if rest else None, unit)}
        case "POST", ["tap"]:
            target.tap(_field(body, "tag", str))
        case "POST", ["keys"]:
            target.keys(_field(body, "keys", str))
        case "POST", ["clock", "advance"]:
            target.advance(float(_field(body, "seconds", number)))
        case _:
            raise BadRequest(404, f"no route {method} {url.path}")
    return {"ok": True}


class ControlServer:
    """Serves :func:`route` on ``host:port`` (port 0: a free one; see :attr:`url`)."""

    def __init__(self, target: Controllable, host: str, port: int) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.url = ""
        self._server: asyncio.Server | None = None
        self._connections = ConnectionTasks()

    async def __aenter__(self) -> ControlServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise EndpointError(
                f"cannot listen for control on {self.host}:{self.port}: {exc.strerror}",
                endpoint=f"{self.host}:{self.port}",
            ) from exc
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._connections.close(self._server)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._connections.track():
            await self._reply(reader, writer)

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await self._respond(reader)
            data = json.dumps(payload).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        try:
            async with asyncio.timeout(10):
                request_line = (await reader.readline()).decode("latin-1").split()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if len(request_line) != 3 or not 0 <= length <= MAX_BODY_BYTES:
                    return 400, {"error": "malformed HTTP request"}
                raw = await reader.readexactly(length) if length else b""
        except (TimeoutError, ValueError, asyncio.IncompleteReadError):
            return 400, {"error": "malformed HTTP request"}
        method, path, _ = request_line
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise BadRequest(400, "body must be a JSON object")
            return 200, route(self.target, method.upper(), path, body)
        except json.JSONDecodeError:
            return 400, {"error": "body is not JSON"}
        except BadRequest as exc:
            return exc.status, {"error": str(exc), "field": exc.field}
        except ConfigError as exc:
            return 400, {"error": str(exc), "field": exc.field}
        except SimError as exc:
            return 409, {"error": str(exc)}


class ControlClient:
    """Blocking client for the CLI's ``fault``/``plug``/``tap``… commands."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (the URL is the user's control endpoint)
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            try:
                message = str(json.loads(exc.read())["error"])
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
            raise ControlError(message, status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlError(f"cannot reach the simulator at {self.url}: {reason}") from exc
