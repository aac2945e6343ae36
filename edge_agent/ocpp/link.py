"""The WebSocket to the CSMS (OCPP-J §3, security whitepaper profiles 1 and 2): the one place
the ``websockets`` library is used and its errors are translated (to
:class:`~edge_agent.errors.OcppLinkError`).

The library is imported when a link is first opened, never at import time: an agent without
an ``[ocpp]`` table does not pay for it (the agent's RSS budget on a Pi, docs/edge.md).

* subprotocol ``ocpp1.6``, required: a CSMS that does not agree to it is refused;
* the charge point id is the last path segment of the URL (OCPP-J §3.1.1);
* profiles 1 and 2: ``Authorization: Basic`` with the charge point id and AuthorizationKey
  (whitepaper §2.3); profile 2 over TLS 1.2 or newer, the CSMS's certificate checked against
  the configured CA (or the system's) and its host name against the URL — the standard
  :mod:`ssl` module, no other crypto library on the Pi.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from edge_agent.errors import OcppLinkError

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

SUBPROTOCOL = "ocpp1.6"
#: The largest frame accepted from the CSMS (a full SendLocalList of 2000 tags is ~150 kB).
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
    context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def basic_auth(charge_point_id: str, key: str) -> str:
    token = base64.b64encode(f"{charge_point_id}:{key}".encode()).decode("ascii")
    return f"Basic {token}"


class Link:
    """One open connection: send and receive OCPP-J text messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        from websockets.exceptions import WebSocketException  # noqa: PLC0415

        try:
            await self._ws.send(text)
        except (WebSocketException, OSError) as exc:
            raise OcppLinkError(f"send failed: {exc}") from exc

    async def recv(self) -> str:
        from websockets.exceptions import WebSocketException  # noqa: PLC0415

        try:
            message = await self._ws.recv()
        except (WebSocketException, OSError) as exc:
            raise OcppLinkError(f"connection lost: {exc}") from exc
        if isinstance(message, bytes):
            # OCPP-J §4.1: text frames only.
            raise OcppLinkError("the CSMS sent a binary frame")
        return message


@asynccontextmanager
async def open_link(endpoint: Endpoint) -> AsyncIterator[Link]:
    """``async with open_link(endpoint) as link:`` — closed on exit."""
    from websockets.asyncio.client import connect  # noqa: PLC0415
    from websockets.exceptions import WebSocketException  # noqa: PLC0415
    from websockets.typing import Subprotocol  # noqa: PLC0415

    headers = {}
    if endpoint.security_profile >= 1:
        if endpoint.authorization_key is None:
            raise OcppLinkError("no AuthorizationKey: security profiles 1 and 2 need one")
        headers["Authorization"] = basic_auth(endpoint.charge_point_id, endpoint.authorization_key)
    context = tls_context(endpoint.ca_file) if endpoint.security_profile == 2 else None
    try:
        ws = await connect(
            endpoint.address,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=headers,
            ssl=context,
            open_timeout=endpoint.open_timeout_s,
            ping_interval=endpoint.ping_interval_s or None,
            ping_timeout=endpoint.ping_interval_s or None,
            max_size=MAX_FRAME_BYTES,
            # Our own backoff (edge_agent/backoff.py) decides when to try again.
            user_agent_header=None,
        )
    except (WebSocketException, OSError, TimeoutError) as exc:
        raise OcppLinkError(f"cannot connect to {endpoint.address}: {exc}") from exc
    try:
        if ws.subprotocol != SUBPROTOCOL:
            raise OcppLinkError(f"the CSMS did not agree to {SUBPROTOCOL} (got {ws.subprotocol!r})")
        yield Link(ws)
    finally:
        # A link being left (broken, or on the way out) may fail to close: nothing to add.
        with contextlib.suppress(WebSocketException, OSError):
            await ws.close()
