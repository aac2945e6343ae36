"""Reading and stopping sessions, scoped to who may see them.

**Session ids.** A session's id in the API is the agent's session ULID
(``sessions.device_session_id``): it exists before the cloud hears of the session (offline
starts), it is what the start command's result names, and it keys the live channel
``cm:live:session:{id}``. Until ingest has stored the first event, ``GET /sessions/{id}``
answers from the unlock request (state ``starting``).

**Whose session.** ``sessions.user_id`` when set; otherwise the unlock request whose
``token_jti`` is the session's credential reference on the same device (the token's ``jti``,
or the reference of a booking PIN the API handed out); otherwise, for a session started with
a booking PIN, the booking of that charger whose ``pin_ref`` is the session's credential
reference (every PIN the cloud shows is recorded on its booking, :mod:`cloud.bookings.pins`)
— its driver and its id. The joins are done here, when read, so ingest never waits for the
API and the order of arrival does not matter.

**Who may see it.** Its driver, the charger's host, an admin. Anyone else gets 404, as if it
did not exist (no probing of ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.billing.quote import Tariff, cost_so_far_paise
from cloud.bookings.models import Booking
from cloud.chargers.models import Charger
from cloud.devices.models import Device
from cloud.devices.presence import device_online
from cloud.errors import (
    ChargerNoAnswer,
    ChargerOffline,
    Conflict,
    DependencyUnavailable,
    NotFound,
    UnlockRefused,
)
from cloud.sessions.commands import record_command, send_and_wait
from cloud.sessions.models import ChargingSession, SessionState, UnlockRequest
from cloud.sessions.schemas import SessionOut, StopAccepted
from cloud.state import AppState
from protocols.enums import CommandStatus, CredentialKind, StopReason
from protocols.messages import StopSession

#: How long a stop waits for the agent's answer.
STOP_WAIT_S = 8.0
#: Lifetime of a stop command: a stop that arrives much later would surprise the driver.
STOP_COMMAND_TTL_S = 60


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as the API sees it: the device's row (if any) and its unlock (if any)."""

    row: ChargingSession | None
    unlock: UnlockRequest | None
    charger: Charger | None
    host_user_id: str | None
    #: The booking whose PIN started the session, if it was started with one.
    booking: Booking | None = None

    @property
    def owner_id(self) -> str | None:
        if self.row is not None and self.row.user_id is not None:
            return self.row.user_id
        if self.unlock is not None:
            return self.unlock.user_id
        return self.booking.user_id if self.booking is not None else None

    @property
    def device_id(self) -> str:
        if self.row is not None:
            return self.row.device_id
        assert self.unlock is not None
        assert self.unlock.device_id is not None
        return self.unlock.device_id

    @property
    def session_id(self) -> str:
        if self.row is not None:
            return self.row.device_session_id
        assert self.unlock is not None
        assert self.unlock.device_session_id is not None
        return self.unlock.device_session_id

    def visible_to(self, principal: Principal) -> bool:
        return principal.has(Role.ADMIN) or principal.user_id in {
            self.owner_id,
            self.host_user_id,
        }


def _pin_booking() -> ColumnElement[bool]:
    """A session started with a booking PIN, joined to that booking: the reference the agent
    reported is the booking's ``pin_ref``, on the charger ingest found for the device."""
    return and_(
        ChargingSession.credential_kind == CredentialKind.PIN,
        Booking.pin_ref == ChargingSession.credential_ref,
        Booking.charger_id == ChargingSession.charger_id,
    )


def _views() -> Select[tuple[ChargingSession, UnlockRequest, Booking]]:
    """Sessions with their unlock request and PIN booking, if any (outer joins)."""
    return (
        select(ChargingSession, UnlockRequest, Booking)
        .outerjoin(
            UnlockRequest,
            and_(
                UnlockRequest.device_id == ChargingSession.device_id,
                UnlockRequest.token_jti == ChargingSession.credential_ref,
            ),
        )
        .outerjoin(Booking, _pin_booking())
    )


async def _with_charger(
    db: AsyncSession,
    row: ChargingSession | None,
    unlock: UnlockRequest | None,
    booking: Booking | None = None,
) -> SessionView:
    charger_id = (row.charger_id if row is not None else None) or (
        unlock.charger_id if unlock is not None else None
    )
    charger = None if charger_id is None else await db.get(Charger, charger_id)
    if charger is None and row is not None:
        # A device session on a charger the listing does not name (yet): the device's charger.
        charger = await db.scalar(select(Charger).where(Charger.device_id == row.device_id))
    host_user_id = None
    if charger is not None:
        host_user_id = await db.scalar(select(Host.user_id).where(Host.id == charger.host_id))
    return SessionView(row, unlock, charger, host_user_id, booking)


async def load_view(db: AsyncSession, principal: Principal, session_id: str) -> SessionView:
    """The session ``session_id`` if ``principal`` may see it; else :class:`NotFound`."""
    found = (
        await db.execute(_views().where(ChargingSession.device_session_id == session_id).limit(1))
    ).first()
    if found is not None:
        view = await _with_charger(db, found[0], found[1], found[2])
    else:
        unlock = await db.scalar(
            select(UnlockRequest).where(UnlockRequest.device_session_id == session_id).limit(1)
        )
        if unlock is None:
            raise NotFound("session", session_id)
        view = await _with_charger(db, None, unlock)
    if not view.visible_to(principal):
        raise NotFound("session", session_id)
    return view


async def view_by_pk(db: AsyncSession, session_pk: int) -> SessionView | None:
    """The session whose ``sessions.id`` is ``session_pk``, unscoped (for the cloud's own
    jobs, never for a caller: the notification job finds the driver to tell with it)."""
    found = (await db.execute(_views().where(ChargingSession.id == session_pk).limit(1))).first()
    if found is None:
        return None
    return await _with_charger(db, found[0], found[1], found[2])


def session_out(view: SessionView, now: datetime) -> SessionOut:
    row, unlock, charger = view.row, view.unlock, view.charger
    energy = row.energy_wh if row is not None else 0
    started = row.started_at if row is not None else None
    final = row is not None and row.amount_paise is not None
    if final:
        assert row is not None
        assert row.amount_paise is not None
        cost = row.amount_paise
    elif charger is not None:
        until = (row.stopped_at if row is not None else None) or now
        cost = cost_so_far_paise(
            Tariff.from_charger(charger), energy_wh=energy, started_at=started, until=until
        )
    else:
        cost = 0
    booking_id = (
        (row.booking_id if row is not None else None)
        or (unlock.booking_id if unlock is not None else None)
        or (view.booking.id if view.booking is not None else None)
    )
    return SessionOut(
        id=view.session_id,
        unlock_id=unlock.id if unlock is not None else None,
        user_id=view.owner_id,
        charger_id=charger.id if charger is not None else None,
        device_id=view.device_id,
        connector=row.connector_number if row is not None else unlock.connector_number,  # type: ignore[union-attr]
        booking_id=booking_id,
        state="starting" if row is None else row.state.value,
        started_at=started,
        stopped_at=row.stopped_at if row is not None else None,
        meter_start_wh=row.meter_start_wh if row is not None else None,
        meter_stop_wh=row.meter_stop_wh if row is not None else None,
        energy_wh=energy,
        power_w=row.power_w if row is not None else None,
        stop_reason=row.stop_reason.value if row is not None and row.stop_reason else None,
        offline=row.offline if row is not None else False,
        cost_paise=cost,
        cost_final=final,
    )


async def get_session(
    db: AsyncSession, principal: Principal, session_id: str, now: datetime
) -> SessionOut:
    return session_out(await load_view(db, principal, session_id), now)


def _mine(user_id: str, first: int) -> Select[tuple[int]]:
    """Ids of the first ``first`` sessions ``user_id`` drove, newest first.

    Three indexed lookups in one UNION rather than an OR across the joins (which no index
    serves): sessions whose row names the driver (``ix_sessions_user_id``), unnamed ones
    found from the driver's unlocks (``ix_unlock_requests_user_id``, then
    ``ix_sessions_device_id_credential_ref``), and unnamed ones started with the PIN of one
    of the driver's bookings (``ix_bookings_user_id``, then the same index). A PIN session
    can be found both ways (the offline unlock records the PIN's reference too), so the
    union removes duplicates; each part stops after ``first``.
    """
    order = (ChargingSession.started_at.desc(), ChargingSession.id.desc())
    named = (
        select(ChargingSession.id, ChargingSession.started_at)
        .where(ChargingSession.user_id == user_id)
        .order_by(*order)
        .limit(first)
    )
    by_unlock = (
        select(ChargingSession.id, ChargingSession.started_at)
        .join(
            UnlockRequest,
            and_(
                UnlockRequest.device_id == ChargingSession.device_id,
                UnlockRequest.token_jti == ChargingSession.credential_ref,
            ),
        )
        .where(UnlockRequest.user_id == user_id, ChargingSession.user_id.is_(None))
        .order_by(*order)
        .limit(first)
    )
    by_pin = (
        select(ChargingSession.id, ChargingSession.started_at)
        .join(Booking, _pin_booking())
        .where(Booking.user_id == user_id, ChargingSession.user_id.is_(None))
        .order_by(*order)
        .limit(first)
    )
    every = union(named, by_unlock, by_pin).subquery()
    return select(every.c.id).order_by(every.c.started_at.desc(), every.c.id.desc()).limit(first)


async def list_my_sessions(
    db: AsyncSession, principal: Principal, *, limit: int, offset: int, now: datetime
) -> list[SessionOut]:
    """The sessions the caller drove (newest first)."""
    page = _mine(principal.user_id, offset + limit).offset(offset).subquery()
    rows = (
        await db.execute(
            _views()
            .join(page, page.c.id == ChargingSession.id)
            .order_by(ChargingSession.started_at.desc(), ChargingSession.id.desc())
        )
    ).all()
    return [session_out(await _with_charger(db, r[0], r[1], r[2]), now) for r in rows]


async def stop_session(
    state: AppState, principal: Principal, session_id: str, now: datetime
) -> StopAccepted:
    """Send ``stop_session`` and wait for the agent's answer (the driver, host or admin)."""
    async with state.sessions() as db, db.begin():
        view = await load_view(db, principal, session_id)
        if view.row is not None and view.row.state is SessionState.STOPPED:
            raise Conflict(
                f"session {session_id} is already stopped", entity="session", key=session_id
            )
        charger_id = view.charger.id if view.charger is not None else view.device_id
        device = await db.get(Device, view.device_id)
        offline_after = state.settings.marketplace.device_offline_after_s
        if device is None or not device_online(device, now, offline_after):
            raise ChargerOffline(charger_id)
        if not state.broker.connected:
            # Before recording anything: a stored command that never left would mislead.
            raise DependencyUnavailable("broker", "the API is not connected to the MQTT broker")
        prepared = await record_command(
            db,
            view.device_id,
            StopSession(session_id=view.session_id, reason=StopReason.REMOTE),
            now=now,
            ttl_s=STOP_COMMAND_TTL_S,
        )
    cmd_id = prepared.command.cmd_id
    result = await send_and_wait(state, prepared, wait_s=STOP_WAIT_S)
    if result is None:
        raise ChargerNoAnswer(charger_id, cmd_id=cmd_id)
    if result.status is not CommandStatus.ACCEPTED:
        raise UnlockRefused(
            f"the charger refused the stop: {result.detail or result.status.value}",
            command_status=result.status.value,
            agent_status=None,
            cmd_id=cmd_id,
        )
    async with state.sessions() as db:
        stopped = await db.scalar(
            select(ChargingSession.state).where(
                ChargingSession.device_id == view.device_id,
                ChargingSession.device_session_id == view.session_id,
            )
        )
    return StopAccepted(
        session_id=session_id,
        cmd_id=cmd_id,
        state="stopped" if stopped is SessionState.STOPPED else "stopping",
    )
