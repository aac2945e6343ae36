"""The agent's own RFC 6455 client (edge_agent/ocpp/websocket.py) against a server nobody
here wrote (the ``websockets`` package's): messages of every length class, fragments, ping
and pong both ways, the server's close, and the handshakes it must refuse."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from edge_agent.errors import OcppLinkError
from edge_agent.ocpp.websocket import WebSocket, connect, mask
from tests.support.mosquitto import free_port

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(
    handler: Handler,
    *,
    subprotocols: list[str] | None = ["ocpp1.6"],  # noqa: B006 -- read only
    refuse: HTTPStatus | None = None,
) -> AsyncIterator[str]:
    def process(connection: ServerConnection, request: Request) -> Response | None:
        return None if refuse is None else connection.respond(refuse, "no\n")

    port = free_port()
    async with serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        process_request=process,
        max_size=None,
    ):
        yield f"ws://127.0.0.1:{port}/ocpp/CP-1"


async def _open(url: str) -> WebSocket:
    return await connect(
        url,
        subprotocol="ocpp1.6",
        headers={"Authorization": "Basic eDp5"},
        ssl_context=None,
        open_timeout_s=5,
        max_size=200_000,
    )


def test_masking_is_its_own_inverse() -> None:
    key = b"\x01\x02\x03\x04"
    for payload in (b"", b"a", b"hello world" * 13):
        assert mask(mask(payload, key), key) == payload
    assert mask(b"\x00\x00\x00\x00\x00", key) == b"\x01\x02\x03\x04\x01"


async def test_messages_of_every_length_fragments_and_pings_round_trip() -> None:
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["path"] = ws.request.path
        seen["auth"] = ws.request.headers.get("Authorization")
        seen["protocol"] = ws.subprotocol
        async for message in ws:
            if message == "fragments":
                await ws.send(["part-1 ", "part-2 ", "part-3"])
            elif message == "ping me":
                pong = await ws.ping()
                await pong  # our client answered
                await ws.send("ponged")
            else:
                await ws.send(message)

    async with server(handler) as url:
        ws = await _open(url)
        for size in (0, 1, 125, 126, 65535, 65536, 150_000):
            text = "é" * (size // 2) + "x" * (size % 2)
            await ws.send_text(text)
            assert await ws.recv() == text
        await ws.send_text("fragments")
        assert await ws.recv() == "part-1 part-2 part-3"
        await ws.send_text("ping me")
        assert await ws.recv() == "ponged"
        await ws.ping()
        await ws.send_text("after ping")
        assert await ws.recv() == "after ping"
        assert ws.pong.is_set()
        await ws.close()
    assert seen == {"path": "/ocpp/CP-1", "auth": "Basic eDp5", "protocol": "ocpp1.6"}


async def test_the_servers_close_and_an_over_long_message_end_the_link() -> None:
    async def handler(ws: ServerConnection) -> None:
        message = await ws.recv()
        if message == "big":
            await ws.send("y" * 300_000)
            await ws.wait_closed()
        else:
            await ws.close(4000, "bye")

    async with server(handler) as url:
        ws = await _open(url)
        await ws.send_text("close")
        with pytest.raises(OcppLinkError, match="4000 bye"):
            await ws.recv()
        ws = await _open(url)
        await ws.send_text("big")
        with pytest.raises(OcppLinkError, match="over 200000 bytes"):
            await ws.recv()


async def test_handshakes_that_are_not_an_ocpp16_websocket_are_refused() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    # A plain WebSocket server that names no subprotocol.
    async with server(handler, subprotocols=None) as url:
        with pytest.raises(OcppLinkError, match=r"did not agree to ocpp1\.6"):
            await _open(url)
    # One that speaks only another (websockets refuses the handshake itself).
    async with server(handler, subprotocols=["ocpp2.0.1"]) as url:
        with pytest.raises(OcppLinkError, match="HTTP 400"):
            await _open(url)
    async with server(handler, refuse=HTTPStatus.UNAUTHORIZED) as url:
        with pytest.raises(OcppLinkError, match="HTTP 401"):
            await _open(url)
    with pytest.raises(OcppLinkError, match="cannot connect"):
        await _open(f"ws://127.0.0.1:{free_port()}/ocpp/CP-1")
