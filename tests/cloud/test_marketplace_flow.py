"""Acceptance: the marketplace end to end against a real agent, simulator, broker and ingest.

A host's charger is listed and approved, its agent claims its identity with a pairing code,
a driver books it and unlocks it through the API: the simulated contactor closes, the live
WebSocket shows power flowing and cost counting, the stop opens it, and the cloud's session
bills exactly the simulator's register delta. With the agent's link cut, the API hands the
booked driver a PIN instead; typed on the simulated keypad it starts a session at the agent,
which reaches the cloud after the link returns, flagged ``offline`` and tied to the driver.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from edge_agent.control import request as control
from protocols.pins import PIN_DIGITS
from tests.support.certs import Certs
from tests.support.flow_rig import (
    PRICE_PER_KWH_PAISE,
    SESSION_FEE_PAISE,
    Market,
    booking_window,
    register_wh,
    relay_closed,
    running_market,
    wait_for,
)
from tests.support.market import add_user
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def _with_gst(taxable_paise: int) -> int:
    """The driver's amount: the taxable value plus CGST 9 % and SGST 9 %, each to the nearest
    paisa, halves up (cloud.billing.quote)."""
    return taxable_paise + 2 * ((taxable_paise * 900 + 5000) // 10_000)


async def _session(market: Market, session_id: str) -> dict[str, Any]:
    answer = await market.http.get(f"/sessions/{session_id}", headers=market.driver.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _frames(ws: Any, into: list[dict[str, Any]]) -> None:
    async for text in ws:
        into.append(json.loads(text))


async def test_book_unlock_watch_stop_bills_the_register_delta(market: Market) -> None:
    start, end = booking_window()
    booking_id = await market.book(market.driver, start=start, end=end)
    before_wh = register_wh(market.sim)
    assert not relay_closed(market.sim)

    answer = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1, "booking_id": booking_id},
        headers=market.driver.headers,
    )
    assert answer.status_code == 201, answer.text
    started = answer.json()
    assert started["outcome"] == "started"
    assert started["booking_id"] == booking_id
    assert started["agent_status"] == "Accepted"
    # The agent answers only after the contactor closed.
    assert relay_closed(market.sim)
    session_id = started["session_id"]

    # A second unlock of the busy connector reaches the agent and is refused by it.
    again = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1, "booking_id": booking_id},
        headers=market.driver.headers,
    )
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("/unlock-refused")
    assert again.json()["agent_status"] == "ConcurrentTx"

    # Live: the session's stream shows power flowing and the cost counting up.
    frames: list[dict[str, Any]] = []
    url = market.ws_url(f"/ws/sessions/{session_id}", market.driver)
    async with websockets.connect(url) as ws:
        reader = asyncio.create_task(_frames(ws, frames), name="ws-reader")
        try:

            async def power_flowing() -> bool:
                return any((f.get("power_w") or 0) > 1000 for f in frames[1:])

            await wait_for(power_flowing, "live power on the WebSocket")

            async def energy_flowed() -> bool:
                return register_wh(market.sim) >= before_wh + 5

            await wait_for(energy_flowed, "energy through the meter")

            async def cost_counted() -> bool:
                return any(f["type"] == "session" and (f["energy_wh"] or 0) > 0 for f in frames)

            await wait_for(cost_counted, "a session update with energy", timeout_s=20)
        finally:
            reader.cancel()
    snapshot = frames[0]
    assert snapshot["type"] == "snapshot"
    assert snapshot["session"]["id"] == session_id
    assert snapshot["session"]["state"] in {"starting", "active"}
    assert (snapshot["session"]["power_w"] or 0) < max(f.get("power_w") or 0 for f in frames[1:])
    update = next(f for f in frames if f["type"] == "session" and f["energy_wh"] > 0)
    expected = _with_gst(
        SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * update["energy_wh"] + 500) // 1000
    )
    assert update["cost_paise"] == expected

    # Another driver can neither read, stop nor watch it; an admin can read it.
    stranger = await add_user(market.pg, market.settings, Role.DRIVER)
    path = f"/sessions/{session_id}"
    assert (await market.http.get(path, headers=stranger.headers)).status_code == 404
    assert (await market.http.post(f"{path}/stop", headers=stranger.headers)).status_code == 404
    assert (await market.http.get(path, headers=market.admin.headers)).status_code == 200
    async with websockets.connect(market.ws_url(f"/ws/sessions/{session_id}", stranger)) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403

    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    assert stop.status_code == 202, stop.text
    assert not relay_closed(market.sim)
    after_wh = register_wh(market.sim)

    async def stopped() -> bool:
        return bool((await _session(market, session_id))["state"] == "stopped")

    await wait_for(stopped, "the stopped session in the cloud")
    session = await _session(market, session_id)
    assert session["meter_start_wh"] == before_wh
    assert session["meter_stop_wh"] == after_wh
    assert session["energy_wh"] == after_wh - before_wh > 0
    assert session["stop_reason"] == "Remote"
    assert session["offline"] is False
    assert session["booking_id"] == booking_id
    assert session["user_id"] == market.driver.id
    assert session["cost_paise"] == _with_gst(
        SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * session["energy_wh"] + 500) // 1000
    )
    mine = (await market.http.get("/sessions", headers=market.driver.headers)).json()
    assert [s["id"] for s in mine["items"]] == [session_id]
    # The host sees it too; the stop is not repeatable.
    assert (
        await market.http.get(f"/sessions/{session_id}", headers=market.host.headers)
    ).status_code == 200
    again_stop = await market.http.post(
        f"/sessions/{session_id}/stop", headers=market.driver.headers
    )
    assert again_stop.status_code == 409


async def test_offline_pin_authorizes_at_the_agent_and_syncs_later_flagged_offline(
    market: Market,
) -> None:
    start, end = booking_window()
    booking_id = await market.book(market.driver, start=start, end=end)
    await market.link.cut()

    async def offline() -> bool:
        return not await market.device_online()

    await wait_for(offline, "the Last Will to mark the device offline")

    answer = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1, "booking_id": booking_id},
        headers=market.driver.headers,
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["outcome"] == "offline"
    pin = body["pin"]
    assert len(pin) == PIN_DIGITS
    # Asking again while offline gives the same PIN and the same unlock.
    repeat = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1, "booking_id": booking_id},
        headers=market.driver.headers,
    )
    assert repeat.status_code == 202
    assert (repeat.json()["pin"], repeat.json()["unlock_id"]) == (pin, body["unlock_id"])
    # Another driver, pay-as-you-go, is told the connector is booked.
    other = await add_user(market.pg, market.settings, Role.DRIVER)
    held = await market.http.post(
        f"/chargers/{market.charger_id}/sessions", json={"connector": 1}, headers=other.headers
    )
    assert held.status_code == 409, held.text
    assert held.json()["type"].endswith("/connector-held")

    before_wh = register_wh(market.sim)
    market.sim.keys(pin + "#")

    async def closed() -> bool:
        return relay_closed(market.sim)

    await wait_for(closed, "the keypad PIN to close the relay")

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 3

    await wait_for(energy_flowed, "energy through the meter")
    sock = market.site / "agent.sock"
    assert (await control(sock, {"cmd": "stop", "connector": 1}))["ok"]
    after_wh = register_wh(market.sim)

    await market.link.restore()

    async def synced() -> bool:
        state = await market.pg.fetchval(
            "SELECT state FROM sessions WHERE device_id = $1", market.device_id
        )
        return bool(state == "stopped")

    await wait_for(synced, "the offline session to reach the cloud", timeout_s=60)
    mine = (await market.http.get("/sessions", headers=market.driver.headers)).json()["items"]
    assert len(mine) == 1
    session = mine[0]
    assert session["offline"] is True
    assert session["unlock_id"] == body["unlock_id"]
    assert session["booking_id"] == booking_id
    assert session["energy_wh"] == after_wh - before_wh > 0
    assert session["state"] == "stopped"
