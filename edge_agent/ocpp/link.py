"""The connection to the CSMS (OCPP-J §3, security whitepaper profiles 1 and 2), on the
agent's own small WebSocket client (:mod:`edge_agent.ocpp.websocket`: the RSS budget).

* subprotocol ``ocpp1.6``, required: a CSMS that does not agree to it is refused;
* the charge point id is the last path segment of the URL (OCPP-J §3.1.1);
* profiles 1 and 2: ``Authorization: Basic`` with the charge point id and AuthorizationKey
  (whitepaper §2.3); profile 2 over TLS 1.2 or newer, the CSMS's certificate checked against
  the configured CA (or the system's) and its host name against the URL — the standard
  :mod:`ssl` module, no other crypto library on the Pi;
* WebSocketPingInterval: a ping that gets no pong within the interval ends the link.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edge_agent.errors import OcppLinkError
from edge_agent.ocpp.websocket import WebSocket, connect

SUBPROTOCOL = "ocpp1.6"
#: The largest message accepted from the CSMS (a full SendLocalList of 2000 tags is ~150 kB).
MAX_FRAME_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect (built from the settings and the key store)."""

    url: str
    charge_point_id: str
    security_profile: int
    authorization_key: str | None
    ca_file: Path | None
    open_timeout_s: float
    #: WebSocket ping interval (the WebSocketPingInterval key); 0 disables pings.
    ping_interval_s: int

    @property
    def address(self) -> str:
        return f"{self.url.rstrip('/')}/{quote(self.charge_point_id, safe='')}"


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Profile 2's TLS: 1.2 or newer, certificate and host name checked."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise OcppLinkError(f"cannot load the CA file {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def basic_auth(charge_point_id: str, key: str) -> str:
    token = base64.b64encode(f"{charge_point_id}:{key}".encode()).decode("ascii")
    return f"Basic {token}"


class Link:
    """One open connection: send and receive OCPP-J text messages."""

    def __init__(self, ws: WebSocket, ping_interval_s: int) -> None:
        self._ws = ws
        self.ping_interval_s = ping_interval_s

    async def send(self, text: str) -> None:
        await self._ws.send_text(text)

    async def recv(self) -> str:
        message = await self._ws.recv()
        if isinstance(message, bytes):
            # OCPP-J §4.1: text frames only.
            raise OcppLinkError("the CSMS sent a binary frame")
        return message

    async def keepalive(self) -> None:
        """Ping every WebSocketPingInterval; no pong within it: the link is broken."""
        interval_s = self.ping_interval_s
        if interval_s <= 0:
            await asyncio.Event().wait()  # no pings: wait with the other tasks
        while True:
            await asyncio.sleep(interval_s)
            await self._ws.ping()
            try:
                async with asyncio.timeout(interval_s):
                    await self._ws.pong.wait()
            except TimeoutError:
                raise OcppLinkError(f"no pong within {interval_s} s") from None


@asynccontextmanager
async def open_link(endpoint: Endpoint) -> AsyncIterator[Link]:
    """``async with open_link(endpoint) as link:`` — closed on exit."""
    headers = {}
    if endpoint.security_profile >= 1:
        if endpoint.authorization_key is None:
            raise OcppLinkError("no AuthorizationKey: security profiles 1 and 2 need one")
        headers["Authorization"] = basic_auth(endpoint.charge_point_id, endpoint.authorization_key)
    context = tls_context(endpoint.ca_file) if endpoint.security_profile == 2 else None
    ws = await connect(
        endpoint.address,
        subprotocol=SUBPROTOCOL,
        headers=headers,
        ssl_context=context,
        open_timeout_s=endpoint.open_timeout_s,
        max_size=MAX_FRAME_BYTES,
    )
    try:
        yield Link(ws, endpoint.ping_interval_s)
    finally:
        await ws.close()
