"""Every HTTP request's id and client address, as the audit log records them.

**Request id.** A reverse proxy that already numbers requests (nginx ``$request_id``, a load
balancer's trace id) sends it as ``X-Request-ID``; a value of 1-64 characters from
``[A-Za-z0-9._:-]`` is kept, so one id follows a request through the proxy's log, ours and
the audit log. Anything else (absent, too long, other characters) is replaced by a new ULID:
a client cannot push text of its choosing into the log. The id is answered in the same
header. It is a correlation id, not a credential: nothing trusts it.

**Client address.** ``request.client.host``: uvicorn replaces the socket's peer with the
``X-Forwarded-For`` address only when the peer is one of ``APP_FORWARDED_ALLOW_IPS``
(cloud/cli.py), so this is the address rate limits use too; a value that is not an IP
address (a test transport's name) is recorded as none.
"""

from __future__ import annotations

import ipaddress
import re

from fastapi import FastAPI, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocols.ids import new_ulid

HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def install_request_id(app: FastAPI) -> None:
    """Give every request an id (:data:`HEADER` in, or a new ULID), answered in the header."""
    app.add_middleware(RequestIdMiddleware)


class RequestIdMiddleware:
    """Plain ASGI, not ``@app.middleware("http")``: that wrapper costs every request extra
    tasks and streams (measured by ``bench.payments``, docs/decisions.md). The id goes into
    the request's state (``request.state.request_id``) and the answer's header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(HEADER, "")
        rid = incoming if _ACCEPTED.fullmatch(incoming) else new_ulid()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def client_ip(request: Request) -> str | None:
    host = request.client.host if request.client else None
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
