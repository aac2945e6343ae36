"""Live WebSocket streams: ``/ws/sessions/{id}`` and ``/ws/chargers/{id}``.

**Auth.** The access token travels as the ``access_token`` query parameter (browsers cannot
set headers on a WebSocket). The server accepts, then checks, and closes with **4401** (no or
bad token) or **4403** (not allowed — also for an id that does not exist, so ids cannot be
probed). A session stream is for the session's driver, the charger's host and admins; a
charger stream for its host and admins (drivers see public status through the listing).

**Frames** (JSON text): first a snapshot, then one frame per live update:

* ``{"type": "session", "session_id", "state", "energy_wh", "power_w", "cost_paise",
  "offline", "ts"}`` — from the session's events; ``cost_paise`` is the estimate from the
  charger's pricing (integer paise). The session stream closes (1000) after ``stopped``.
* ``{"type": "reading", "meter_id", "power_w", "energy_import_wh", "ts"}`` — the device's
  meter readings (on a session stream only when the charger has a single connector, so the
  meter is the session's).
* ``{"type": "status", "online", "connectors"}`` — the device's status (charger stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from sqlalchemy import func, select

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal, verify_access_token
from cloud.chargers.models import Charger, Connector
from cloud.devices.models import Device
from cloud.devices.presence import device_online
from cloud.errors import NotFound, Unauthorized
from cloud.sessions.live import Subscription
from cloud.sessions.pricing import Tariff, cost_so_far_paise
from cloud.sessions.service import load_view, session_out
from cloud.state import AppState

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


def _session_channel(session_id: str) -> str:
    return f"cm:live:session:{session_id}"


def _device_channel(device_id: str) -> str:
    return f"cm:live:device:{device_id}"


def _charger_channel(charger_id: str) -> str:
    return f"cm:live:charger:{charger_id}"


def _state(websocket: WebSocket) -> AppState:
    state = websocket.app.state.cloud
    assert isinstance(state, AppState)
    return state


async def _authenticate(websocket: WebSocket, state: AppState) -> Principal | None:
    await websocket.accept()
    token = websocket.query_params.get("access_token")
    try:
        if not token:
            raise Unauthorized("an access token is required (?access_token=…)")
        return verify_access_token(state.settings.app.secret_key.get_secret_value(), token)
    except Unauthorized as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, str(exc)[:120])
        return None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or value == "None":
        return None
    return datetime.fromisoformat(value)


def session_frame(
    body: dict[str, Any], tariff: Tariff | None, now: datetime | None = None
) -> dict[str, Any]:
    """The client frame for a session row published by ingest; a running session is priced
    up to ``now`` (default: the clock)."""
    now = now or datetime.now(UTC)
    energy = int(body.get("energy_wh") or 0)
    started = _parse_time(body.get("started_at"))
    stopped = _parse_time(body.get("stopped_at"))
    cost = None
    if tariff is not None:
        until = stopped or now
        cost = cost_so_far_paise(tariff, energy_wh=energy, started_at=started, until=until)
    return {
        "type": "session",
        "session_id": body.get("device_session_id"),
        "connector": body.get("connector_number"),
        "state": body.get("state"),
        "energy_wh": energy,
        "power_w": body.get("power_w"),
        "cost_paise": cost,
        "offline": bool(body.get("offline")),
        "stop_reason": body.get("stop_reason"),
        "ts": (stopped or now).isoformat(),
    }


def reading_frame(body: dict[str, Any]) -> dict[str, Any]:
    values = body.get("values") or {}
    return {
        "type": "reading",
        "meter_id": body.get("meter_id"),
        "power_w": values.get("power_w"),
        "energy_import_wh": values.get("energy_import_wh"),
        "ts": body.get("ts"),
    }


async def _pump(
    websocket: WebSocket,
    sub: Subscription,
    frame_for: Callable[[str, dict[str, Any]], dict[str, Any] | None],
    is_last: Callable[[dict[str, Any]], bool],
) -> None:
    while True:
        channel, text = await sub.get()
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        frame = frame_for(channel, body)
        if frame is None:
            continue
        await websocket.send_json(frame)
        if is_last(frame):
            await websocket.close(1000)
            return


async def _until_client_leaves(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()  # clients send nothing we need; pings are fine
    except (WebSocketDisconnect, RuntimeError):
        return


async def _serve(websocket: WebSocket, pump: Coroutine[Any, Any, None]) -> None:
    """Run ``pump`` until it ends or the client leaves, whichever comes first."""
    sender = asyncio.create_task(pump, name="ws-send")
    receiver = asyncio.create_task(_until_client_leaves(websocket), name="ws-receive")
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        results = await asyncio.gather(sender, receiver, return_exceptions=True)
    for result in results:
        if isinstance(result, WebSocketDisconnect | asyncio.CancelledError):
            continue
        if isinstance(result, BaseException):
            log.warning("live stream ended: %r", result)


async def stream_session(websocket: WebSocket, session_id: str) -> None:
    state = _state(websocket)
    principal = await _authenticate(websocket, state)
    if principal is None:
        return
    async with state.sessions() as db:
        try:
            view = await load_view(db, principal, session_id)
        except NotFound:
            await websocket.close(CLOSE_FORBIDDEN, "not your session")
            return
        single_connector = False
        if view.charger is not None:
            count = await db.scalar(
                select(func.count())
                .select_from(Connector)
                .where(Connector.charger_id == view.charger.id)
            )
            single_connector = count == 1
    tariff = Tariff.from_charger(view.charger) if view.charger is not None else None
    snapshot = session_out(view, datetime.now(UTC))
    channels = [_session_channel(session_id)]
    if single_connector:
        channels.append(_device_channel(view.device_id))
    async with state.live.subscribe(*channels) as sub:
        # The snapshot goes out after subscribing: nothing published in between is lost.
        await websocket.send_json({"type": "snapshot", "session": snapshot.model_dump(mode="json")})
        if snapshot.state == "stopped":
            await websocket.close(1000)
            return
        session_chan = _session_channel(session_id)

        device_id = view.device_id

        def frame_for(channel: str, body: dict[str, Any]) -> dict[str, Any] | None:
            # Session ids are unique per device only: another device reporting the same id
            # publishes on the same channel, and its session is not this one.
            if body.get("device_id") != device_id:
                return None
            if channel == session_chan and body.get("type") == "session":
                return session_frame(body, tariff)
            if body.get("type") == "reading":
                return reading_frame(body)
            return None

        await _serve(
            websocket,
            _pump(
                websocket, sub, frame_for,
                lambda f: f["type"] == "session" and f["state"] == "stopped",
            ),
        )  # fmt: skip


async def stream_charger(websocket: WebSocket, charger_id: str) -> None:
    state = _state(websocket)
    principal = await _authenticate(websocket, state)
    if principal is None:
        return
    async with state.sessions() as db:
        charger = await db.get(Charger, charger_id)
        host_user = None
        if charger is not None:
            host_user = await db.scalar(select(Host.user_id).where(Host.id == charger.host_id))
        allowed = charger is not None and (
            principal.has(Role.ADMIN) or principal.user_id == host_user
        )
        if not allowed or charger is None:
            await websocket.close(CLOSE_FORBIDDEN, "not your charger")
            return
        connectors = (
            await db.execute(
                select(Connector.number, Connector.status)
                .where(Connector.charger_id == charger_id)
                .order_by(Connector.number)
            )
        ).all()
        device = None if charger.device_id is None else await db.get(Device, charger.device_id)
    tariff = Tariff.from_charger(charger)
    channels = [_charger_channel(charger_id)]
    if device is not None:
        channels.append(_device_channel(device.id))
    async with state.live.subscribe(*channels) as sub:
        await websocket.send_json(
            {
                "type": "snapshot",
                "charger_id": charger_id,
                "device_id": charger.device_id,
                "online": device_online(
                    device, datetime.now(UTC), state.settings.marketplace.device_offline_after_s
                ),
                "connectors": [{"connector": n, "status": s.value} for n, s in connectors],
            }
        )

        def frame_for(_channel: str, body: dict[str, Any]) -> dict[str, Any] | None:
            kind = body.get("type")
            if kind == "session":
                return session_frame(body, tariff)
            if kind == "reading":
                return reading_frame(body)
            if kind == "status":
                return {
                    "type": "status",
                    "online": body.get("online"),
                    "connectors": body.get("connectors", []),
                    "ts": body.get("ts"),
                }
            return None

        await _serve(websocket, _pump(websocket, sub, frame_for, lambda _f: False))
