"""Session routes: QR unlock, stop, read; and the live WebSocket streams.

HTTP answers and their problems are listed in docs/cloud.md; the rules behind them live in
:mod:`cloud.sessions.unlock` and :mod:`cloud.sessions.service`, the streams in
:mod:`cloud.sessions.ws`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, WebSocket

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.deps import CurrentUser, Db, State, require_roles
from cloud.openapi import links, problems
from cloud.schemas import PathId
from cloud.sessions import service, ws
from cloud.sessions.schemas import (
    SessionList,
    SessionOut,
    StopAccepted,
    UnlockOffline,
    UnlockRequestBody,
    UnlockStarted,
)
from cloud.sessions.unlock import unlock

router = APIRouter(tags=["sessions"])
ws_router = APIRouter(tags=["live"])

DriverUser = Annotated[Principal, Depends(require_roles(Role.DRIVER))]
Id = PathId


@router.post(
    "/chargers/{charger_id}/sessions",
    status_code=201,
    responses={
        202: {"model": UnlockOffline, "description": "charger offline: use the PIN"},
        **problems(401, 402, 403, 404, 409, 422, 503, 504),
    },
    openapi_extra=links(
        201,
        get_session={"session_id": "$response.body#/session_id"},
        stop_session={"session_id": "$response.body#/session_id"},
    ),
)
async def start_session(
    charger_id: Id, body: UnlockRequestBody, state: State, principal: DriverUser, response: Response
) -> UnlockStarted | UnlockOffline:
    """Unlock a connector: with a booking, or pay-as-you-go when it is free. 402
    ``payment-required`` for a booking not yet paid (``POST /bookings/{id}/payment``) or a
    walk-up without its prepayment (``POST /payments``)."""
    answer = await unlock(
        state,
        principal,
        charger_id=charger_id,
        connector_number=body.connector,
        booking_id=body.booking_id,
        now=datetime.now(UTC),
    )
    if isinstance(answer, UnlockOffline):
        response.status_code = 202
    return answer


@router.post(
    "/sessions/{session_id}/stop",
    status_code=202,
    responses=problems(401, 404, 409, 503, 504),
)
async def stop_session(session_id: Id, state: State, principal: CurrentUser) -> StopAccepted:
    """Stop a session (its driver, the charger's host, or an admin)."""
    return await service.stop_session(state, principal, session_id, datetime.now(UTC))


@router.get("/sessions/{session_id}", responses=problems(401, 404, 422))
async def get_session(session_id: Id, db: Db, principal: CurrentUser) -> SessionOut:
    return await service.get_session(db, principal, session_id, datetime.now(UTC))


@router.get("/sessions", responses=problems(401, 422))
async def list_sessions(
    db: Db,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> SessionList:
    """The caller's own sessions as a driver, newest first."""
    items = await service.list_my_sessions(
        db, principal, limit=limit, offset=offset, now=datetime.now(UTC)
    )
    return SessionList(items=items, limit=limit, offset=offset)


@ws_router.websocket("/ws/sessions/{session_id}")
async def session_stream(websocket: WebSocket, session_id: Id) -> None:
    await ws.stream_session(websocket, session_id)


@ws_router.websocket("/ws/chargers/{charger_id}")
async def charger_stream(websocket: WebSocket, charger_id: Id) -> None:
    await ws.stream_charger(websocket, charger_id)
