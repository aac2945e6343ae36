"""A minimal RFC 6455 WebSocket client: what the OCPP uplink needs and nothing more.

Why not a library: the agent must stay within 40 MiB resident on a Pi with the uplink on,
and the ``websockets`` package costs ~1.2 MiB of it (its version module alone pulls in
``importlib.metadata``, ``zipfile`` and ``csv``); this module uses only what the agent has
loaded anyway (asyncio streams, :mod:`ssl`, :mod:`hashlib`). The tests run it against two
servers nobody here wrote (the ``websockets`` server under the ``ocpp`` package's CSMS, and
``ws`` under ocpp-rpc).

What it does (RFC 6455 section numbers):

* the opening handshake (§4.1): ``Sec-WebSocket-Key``/``-Accept`` checked, one
  subprotocol required, extra headers (Basic auth); any status but 101 is refused with it;
* frames (§5.2): client frames masked (§5.3), server frames must not be; text and binary
  messages, fragmented or not (§5.4), up to ``max_size`` bytes; ping answered with pong,
  pong noted for the keepalive (§5.5.2-3); close answered and the link ended (§5.5.1);
* no extensions (permessage-deflate is not offered), no redirects, no proxies.

Every failure is an :class:`~edge_agent.errors.OcppLinkError` (this module is the boundary
for the sockets and TLS it uses).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
import struct
from urllib.parse import urlsplit

from edge_agent.errors import OcppLinkError

#: RFC 6455 §1.3: appended to the key before hashing for Sec-WebSocket-Accept.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: The longest handshake response accepted (status line and headers).
MAX_HANDSHAKE_BYTES = 16 * 1024


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()  # noqa: S324 -- RFC 6455 mandates SHA-1 here


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (§5.3), as one big integer."""
    n = len(payload)
    if n == 0:
        return payload
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, mask_key: bytes) -> bytes:
    """One final, masked client frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask_key + mask(payload, mask_key)


class WebSocket:
    """An open connection; :func:`connect` makes one."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_size: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_size = max_size
        self._closed = False
        #: Set when a pong arrives (the keepalive waits for it).
        self.pong = asyncio.Event()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._closed:
            raise OcppLinkError("the WebSocket is closed")
        # One write() per frame: frames from concurrent senders never interleave.
        self._writer.write(encode_frame(opcode, payload, mask_key=os.urandom(4)))

    async def send_text(self, text: str) -> None:
        try:
            self._send(TEXT, text.encode("utf-8"))
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise OcppLinkError(f"send failed: {exc}") from exc

    async def ping(self) -> None:
        self.pong.clear()
        try:
            self._send(PING, os.urandom(4))
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise OcppLinkError(f"ping failed: {exc}") from exc

    async def recv(self) -> str | bytes:
        """The next whole message (text as str); control frames are handled on the way."""
        parts: list[bytes] = []
        kind: int | None = None
        size = 0
        while True:
            fin, opcode, payload = await self._frame()
            if opcode >= CLOSE:
                await self._control(opcode, payload)
                continue
            if opcode == CONTINUATION:
                if kind is None:
                    raise await self._fail(1002, "a continuation frame with no message")
            elif kind is not None:
                raise await self._fail(1002, "a new message inside a fragmented one")
            else:
                kind = opcode
            if kind not in (TEXT, BINARY):
                raise await self._fail(1002, f"unknown opcode {kind}")
            size += len(payload)
            if size > self._max_size:
                raise await self._fail(1009, f"a message over {self._max_size} bytes")
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if kind == BINARY:
                    return data
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError:
                    raise await self._fail(1007, "a text message that is not UTF-8") from None

    async def _frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self._reader.readexactly(2)
            if b0 & 0x70:
                raise await self._fail(1002, "reserved bits set (no extension was agreed)")
            if b1 & 0x80:
                raise await self._fail(1002, "a masked frame from the server")
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self._reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self._reader.readexactly(8))
            if n > self._max_size:
                raise await self._fail(1009, f"a frame over {self._max_size} bytes")
            payload = await self._reader.readexactly(n) if n else b""
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._closed = True
            raise OcppLinkError(f"connection lost: {exc}") from exc
        opcode = b0 & 0x0F
        if opcode >= CLOSE and (not b0 & 0x80 or n > 125):
            raise await self._fail(1002, "a fragmented or over-long control frame")
        return bool(b0 & 0x80), opcode, payload

    async def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            with contextlib.suppress(OcppLinkError):
                self._send(PONG, payload)
        elif opcode == PONG:
            self.pong.set()
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            with contextlib.suppress(OcppLinkError):
                self._send(CLOSE, payload[:2])
            await self._shut()
            raise OcppLinkError(f"connection closed by the server ({code} {reason})".strip())
        else:
            raise await self._fail(1002, f"unknown control opcode {opcode}")

    async def _fail(self, code: int, why: str) -> OcppLinkError:
        """Close with ``code`` (§7.1.7) and return the error to raise."""
        with contextlib.suppress(OcppLinkError):
            self._send(CLOSE, struct.pack("!H", code))
        await self._shut()
        return OcppLinkError(f"protocol error: {why}")

    async def close(self) -> None:
        """Send a normal close and end the connection (not waiting for the server's)."""
        if not self._closed:
            with contextlib.suppress(OcppLinkError):
                self._send(CLOSE, struct.pack("!H", 1000))
        await self._shut()

    async def _shut(self) -> None:
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


async def connect(
    url: str,
    *,
    subprotocol: str,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None,
    open_timeout_s: float,
    max_size: int,
) -> WebSocket:
    """Open a connection to ``url`` (``ws://`` or ``wss://``) and agree on ``subprotocol``."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise OcppLinkError(f"not a WebSocket URL: {url}")
    if secure != (ssl_context is not None):
        raise OcppLinkError("wss:// needs TLS and ws:// must not use it")
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {parts.netloc.rsplit('@', 1)[-1]}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {subprotocol}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(open_timeout_s):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=host if secure else None,
                limit=MAX_HANDSHAKE_BYTES,
            )
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        if writer is not None:
            writer.close()
        raise OcppLinkError(f"cannot connect to {url}: {exc!r}") from exc
    status, response = _parse(head)
    problem = _refusal(status, response, key, subprotocol)
    if problem is not None:
        writer.close()
        raise OcppLinkError(f"cannot connect to {url}: {problem}")
    return WebSocket(reader, writer, max_size=max_size)


def _parse(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    status = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0
    response: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            response[name.strip().lower()] = value.strip()
    return status, response


def _refusal(status: int, response: dict[str, str], key: str, subprotocol: str) -> str | None:
    """Why the handshake response is not a WebSocket with ``subprotocol``, or None."""
    if status != 101:
        return f"server rejected WebSocket connection: HTTP {status}"
    if response.get("upgrade", "").lower() != "websocket":
        return "no Upgrade: websocket in the answer"
    if "upgrade" not in response.get("connection", "").lower():
        return "no Connection: upgrade in the answer"
    if response.get("sec-websocket-accept") != accept_for(key):
        return "a wrong Sec-WebSocket-Accept"
    if response.get("sec-websocket-extensions"):
        return "the server imposed an extension that was not offered"
    if response.get("sec-websocket-protocol") != subprotocol:
        return f"the CSMS did not agree to {subprotocol}"
    return None
