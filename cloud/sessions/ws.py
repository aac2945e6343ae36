"""Live WebSocket streams: ``/ws/sessions/{id}`` and ``/ws/chargers/{id}`` (and the pages'
``/app/sessions/{id}/live`` and ``/app/host/live/ws``, :func:`stream_host`).

**Auth.** Browsers cannot set headers on a WebSocket, so the access token travels in the
subprotocol list: the client offers ``chargemitra`` and ``bearer.<access token>``
(``new WebSocket(url, ["chargemitra", "bearer." + token])``) and the server answers with
``chargemitra`` only, never echoing the token. The older ``?access_token=…`` query parameter
still works (the tests' and tools' clients use it), but a URL is what proxies and access logs
record: the API's log redacts it (:mod:`cloud.logs`), a proxy in front may not. The server
accepts, then checks the token exactly like the HTTP routes (:func:`cloud.deps.authenticate`:
account still there, not disabled, token version current, roles as they are now), and closes
with **4401** (no, bad or revoked token) or **4403** (not allowed — also for an id that does
not exist, so ids cannot be probed). An open stream is checked again whenever the account
changes (and every ``auth.principal_cache_s`` at the latest) and closes with 4401 when the
account is disabled or deleted or the token is revoked. A session stream is for the
session's driver, the charger's host and admins; a charger stream for its host and admins
(drivers see public status through the listing).

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
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from sqlalchemy import func, select

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.billing.quote import Tariff, cost_so_far_paise
from cloud.chargers.models import Charger, Connector
from cloud.deps import authenticate
from cloud.devices.models import Device
from cloud.devices.presence import device_online
from cloud.errors import NotFound, Unauthorized
from cloud.sessions.live import Subscription
from cloud.sessions.service import load_view, session_out
from cloud.state import AppState

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
#: The subprotocol the server answers with; the token comes as ``bearer.<token>`` beside it.
SUBPROTOCOL = "chargemitra"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."  # noqa: S105 -- a prefix, not a secret
#: An open stream re-checks its caller at least this often even without a notification
#: (the notification listener may be down), when the principal cache is off.
RECHECK_DEFAULT_S = 30.0


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


def _offered_token(websocket: WebSocket) -> str | None:
    """The access token from the subprotocol list, else from the query string."""
    offered: list[str] = websocket.scope.get("subprotocols") or []
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_SUBPROTOCOL_PREFIX)
    return websocket.query_params.get("access_token")


async def _authenticate(
    websocket: WebSocket, state: AppState, token: str | None = None
) -> tuple[Principal, str] | None:
    """Accept, then check the caller (``token`` if given, else the offered one): their
    principal and token, or None once closed 4401."""
    offered: list[str] = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    token = token or _offered_token(websocket)
    try:
        if not token:
            raise Unauthorized(
                f"an access token is required (subprotocol {TOKEN_SUBPROTOCOL_PREFIX}<token>)"
            )
        return await authenticate(state, token), token
    except Unauthorized as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, str(exc)[:120])
        return None


async def _guard(websocket: WebSocket, state: AppState, principal: Principal, token: str) -> None:
    """Return (after closing 4401) once the caller's token no longer stands; re-checks on
    every change to the account the cache hears of, and periodically."""
    recheck_s = state.settings.auth.principal_cache_s or RECHECK_DEFAULT_S
    cache = state.principals
    with contextlib.ExitStack() as stack:
        changed = stack.enter_context(cache.watch(principal.user_id)) if cache else None
        while True:
            try:
                async with asyncio.timeout(recheck_s):
                    if changed is None:
                        await asyncio.Future()  # only the timeout wakes us
                    else:
                        await changed.wait()
            except TimeoutError:
                pass
            if changed is not None:
                changed.clear()
            try:
                await authenticate(state, token)
            except Unauthorized as exc:
                await websocket.close(CLOSE_UNAUTHORIZED, str(exc)[:120])
                return


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


async def _serve(
    websocket: WebSocket, pump: Coroutine[Any, Any, None], guard: Coroutine[Any, Any, None]
) -> None:
    """Run ``pump`` until it ends, the client leaves or ``guard`` ends the caller's access,
    whichever comes first."""
    sender = asyncio.create_task(pump, name="ws-send")
    receiver = asyncio.create_task(_until_client_leaves(websocket), name="ws-receive")
    guarding = asyncio.create_task(guard, name="ws-guard")
    tasks = (sender, receiver, guarding)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, WebSocketDisconnect | asyncio.CancelledError):
            continue
        if isinstance(result, BaseException):
            log.warning("live stream ended: %r", result)


async def stream_session(
    websocket: WebSocket, session_id: str, *, token: str | None = None
) -> None:
    """The session stream; ``token``: the caller's access token when it did not come with
    the handshake (the pages' stream takes it from the browser's web session)."""
    state = _state(websocket)
    caller = await _authenticate(websocket, state, token)
    if caller is None:
        return
    principal, token = caller
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
                websocket,
                sub,
                frame_for,
                lambda f: f["type"] == "session" and f["state"] == "stopped",
            ),
            _guard(websocket, state, principal, token),
        )


async def stream_charger(websocket: WebSocket, charger_id: str) -> None:
    state = _state(websocket)
    caller = await _authenticate(websocket, state)
    if caller is None:
        return
    principal, token = caller
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

        await _serve(
            websocket,
            _pump(websocket, sub, frame_for, lambda _f: False),
            _guard(websocket, state, principal, token),
        )


async def stream_host(websocket: WebSocket, *, token: str | None = None) -> None:
    """The host dashboard's nudges: one ``{"type": "changed", "charger_id"}`` frame whenever
    one of the caller's chargers has news its list shows (its device's status: online,
    connectors; a session's row on it). The page then fetches its list again
    (``/app/host/live``, the server's one rendering of it); meter readings are not news for
    the list and are not forwarded. Hosts only (4403 otherwise); the chargers are the
    caller's as they are when the stream opens (a new one shows on the next reload or the
    page's slow poll)."""
    state = _state(websocket)
    caller = await _authenticate(websocket, state, token)
    if caller is None:
        return
    principal, token = caller
    if not principal.has(Role.HOST):
        await websocket.close(CLOSE_FORBIDDEN, "for hosts")
        return
    async with state.sessions() as db:
        host_id = await db.scalar(select(Host.id).where(Host.user_id == principal.user_id))
        rows = (
            await db.execute(
                select(Charger.id, Charger.device_id).where(Charger.host_id == host_id)
            )
        ).all()
    by_channel: dict[str, str] = {}
    for charger_id, device_id in rows:
        by_channel[_charger_channel(charger_id)] = charger_id
        if device_id is not None:
            by_channel[_device_channel(device_id)] = charger_id
    async with state.live.subscribe(*by_channel) as sub:
        await websocket.send_json({"type": "snapshot", "chargers": len(rows)})

        def frame_for(channel: str, body: dict[str, Any]) -> dict[str, Any] | None:
            if body.get("type") not in ("status", "session"):
                return None
            return {"type": "changed", "charger_id": by_channel.get(channel)}

        await _serve(
            websocket,
            _pump(websocket, sub, frame_for, lambda _f: False),
            _guard(websocket, state, principal, token),
        )
