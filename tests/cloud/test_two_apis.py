"""Two API instances behind one address (issue 21): the unlock goes through one, the driver's
WebSocket lands on the other and still shows the readings ingest stores for that session —
the live fan-out crosses instances through Redis, and the unlock's wait for the agent's
answer holds no state the other instance would need.

The address is a round-robin TCP balancer (each new connection to the next instance), as a
load balancer in front of N replicas spreads connections. Both instances are full
``create_app`` applications with their own engine, Redis and broker connections, run here in
one test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from cloud.app import create_app
from cloud.pg import PgConnection
from tests.support.certs import Certs
from tests.support.flow_rig import Market, booking_window, running_market, wait_for
from tests.support.mosquitto import Broker, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def market(
    db_url: str,
    broker: Broker,
    certs: Certs,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> Any:
    async with running_market(
        db_url=db_url,
        broker=broker,
        certs=certs,
        service_passwords=service_passwords,
        pg=pg,
        tmp=tmp_path,
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def second_api(market: Market) -> AsyncIterator[int]:
    """Another API instance on the same settings (database, Redis, broker); its port."""
    # Its own MQTT client id, as a second process has (open_state: host and pid).
    app = create_app(market.settings, client_id="api-second-instance")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(), name="api-2")

    async def started() -> bool:
        return bool(server.started)

    try:
        await wait_for(started, "the second API")
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=30)


@contextlib.asynccontextmanager
async def round_robin(ports: list[int]) -> AsyncIterator[tuple[int, list[int]]]:
    """One address in front of ``ports``: connection n goes to ports[n % len]. Yields the
    address's port and the list of backends chosen, in connection order."""
    chosen: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = ports[len(chosen) % len(ports)]
        chosen.append(backend)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], chosen
    finally:
        server.close()


async def test_a_websocket_on_one_api_shows_readings_of_an_unlock_through_the_other(
    market: Market,
) -> None:
    first = int(market.api_url.rsplit(":", 1)[1])
    async with second_api(market) as second, round_robin([first, second]) as (port, chosen):
        address = f"127.0.0.1:{port}"
        start, end = booking_window()
        booking_id = await market.book(market.driver, start=start, end=end)
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http:
            answer = await http.post(
                f"/chargers/{market.charger_id}/sessions",
                json={"connector": 1, "booking_id": booking_id},
                headers=market.driver.headers,
            )
            assert answer.status_code == 201, answer.text
            assert answer.json()["outcome"] == "started"
            session_id = answer.json()["session_id"]
            assert chosen == [first]  # the unlock (its wait for the agent) went to the first

            token = market.driver.headers["Authorization"].removeprefix("Bearer ")
            frames: list[dict[str, Any]] = []
            url = f"ws://{address}/ws/sessions/{session_id}?access_token={token}"
            async with websockets.connect(url) as ws:
                assert chosen == [first, second]  # the stream is served by the second

                async def read() -> None:
                    async for text in ws:
                        frames.append(json.loads(text))

                reader = asyncio.create_task(read(), name="ws-reader")
                try:

                    async def power_flowing() -> bool:
                        return any((f.get("power_w") or 0) > 1000 for f in frames[1:])

                    await wait_for(power_flowing, "live power on the second API's WebSocket")
                finally:
                    reader.cancel()
            assert frames[0]["type"] == "snapshot"
            assert frames[0]["session"]["id"] == session_id
            stop = await http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
            assert stop.status_code == 202, stop.text
