"""HTTP routes of bookings: drivers book and cancel, hosts approve and decline.

Routes only gate by role (:func:`cloud.deps.require_roles`); whether a booking is the
caller's is decided by the service's scoped queries, which answer 404 for anyone else's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.bookings import pins, service
from cloud.bookings.extension import send_extension
from cloud.bookings.models import Booking, BookingStatus
from cloud.bookings.schemas import (
    BookingCreate,
    BookingExtend,
    BookingExtended,
    BookingOut,
    BookingPage,
    BookingWithPin,
    PinOut,
)
from cloud.deps import CurrentUser, Db, HostUser, State, require_roles
from cloud.openapi import links, problems
from cloud.schemas import PathId

router = APIRouter(tags=["bookings"])

DriverUser = Annotated[Principal, Depends(require_roles(Role.DRIVER))]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=100_000)]


def _now() -> datetime:
    return datetime.now(UTC)


_BOOKING = {"booking_id": "$response.body#/id"}


@router.post(
    "/bookings",
    status_code=status.HTTP_201_CREATED,
    responses=problems(402, 409),
    openapi_extra=links(201, get_booking=_BOOKING, cancel_booking=_BOOKING, reveal_pin=_BOOKING),
)
async def create_booking(body: BookingCreate, driver: DriverUser, state: State) -> BookingWithPin:
    """Book a connector for ``[start, end)``: 201 with the booking (confirmed, or pending
    host approval; the keypad PIN is in this answer only when the booking costs nothing,
    else it is fetched once with ``POST /bookings/{id}/pin`` after paying); 409
    ``booking-overlap`` when an active booking already holds that connector at that time;
    402 ``payment-required``
    while the driver owes an amount from an earlier session (``POST /amount-due/payment``).

    Rules the body's schema cannot state (422, naming the field): ``start`` is before
    ``end``, both on a 15-minute boundary, ``start`` not in the past and within the booking
    horizon, the booking lasts 15 minutes to 12 hours, and the charger has that connector.
    An unknown (or not bookable) charger is a 404."""
    # Own transactions, not the request's Db: a deadlock victim is retried from the start.
    request = service.NewBooking(
        body=body,
        user_id=driver.user_id,
        secret_key=state.settings.app.secret_key.get_secret_value(),
        approval_ttl_s=state.settings.marketplace.approval_ttl_s,
        now=_now(),
    )
    return await service.create_booking(state.sessions, request)


@router.get("/bookings")
async def list_my_bookings(
    *,
    db: Db,
    user: CurrentUser,
    status: BookingStatus | None = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> BookingPage:
    return await service.list_mine(
        db, user.user_id, status=status, limit=limit, offset=offset, now=_now()
    )


@router.get("/bookings/{booking_id}")
async def get_booking(booking_id: PathId, db: Db, user: CurrentUser) -> BookingOut:
    return await service.get_booking(db, user, booking_id, _now())


@router.post("/bookings/{booking_id}/cancel", responses=problems(409))
async def cancel_booking(booking_id: PathId, user: CurrentUser, state: State) -> BookingOut:
    """Cancel; a PIN the booking had is revoked at the charger (sent after the commit)."""
    now = _now()
    async with state.sessions() as db, db.begin():
        out = await service.cancel_booking(db, user, booking_id, now)
        revoked = await pins.revocation(db, await _booking(db, booking_id), now=now)
    await pins.send_revocation(state, revoked)
    return out


@router.post("/bookings/{booking_id}/pin", responses=problems(402, 409))
async def reveal_pin(booking_id: PathId, db: Db, user: CurrentUser, state: State) -> PinOut:
    """The keypad PIN of the caller's confirmed booking, shown once (free instant bookings
    got it when created); 402 ``payment-required`` until the
    booking is paid (``POST /bookings/{id}/payment``)."""
    return await service.reveal_pin(
        db, user, booking_id, state.settings.app.secret_key.get_secret_value(), _now()
    )


@router.post("/bookings/{booking_id}/extend", responses=problems(402, 409))
async def extend_booking(
    booking_id: PathId, body: BookingExtend, driver: DriverUser, state: State
) -> BookingExtended:
    """Run the caller's running booking (confirmed, started, not ended) until ``end``: on a
    15-minute boundary after the current end, the whole booking at most 12 hours, inside the
    charger's opening hours (422 naming ``end``). The extra amount is quoted by the one
    pricing rule and added to ``amount_paise``; ``topup_paise`` is what is left to pay, with
    ``POST /bookings/{id}/payment`` (a second payment of the booking; the session's bill is
    taken from both). A running session's authorization at the charger is extended over the
    command path (``session_extended``). 409 ``booking-overlap`` when another booking holds
    the added time, ``conflict`` when the booking is not running; 402 ``payment-required``
    while the driver owes an amount; anyone else's booking is a 404."""
    extension = service.Extension(booking_id=booking_id, end=body.end, principal=driver, now=_now())
    extended = await service.extend_booking(state.sessions, extension)
    sent = await send_extension(state, extended.command)
    return BookingExtended(
        **extended.out.model_dump(),
        extra_paise=extended.extra_paise,
        topup_paise=extended.topup_paise,
        session_extended=sent,
    )


@router.post("/bookings/{booking_id}/approve", responses=problems(409))
async def approve_booking(booking_id: PathId, db: Db, host: HostUser) -> BookingOut:
    return await service.approve_booking(db, host, booking_id, _now())


@router.post("/bookings/{booking_id}/decline", responses=problems(409))
async def decline_booking(booking_id: PathId, host: HostUser, state: State) -> BookingOut:
    """Decline; a PIN the booking had is revoked at the charger (sent after the commit)."""
    now = _now()
    async with state.sessions() as db, db.begin():
        out = await service.decline_booking(db, host, booking_id, now)
        revoked = await pins.revocation(db, await _booking(db, booking_id), now=now)
    await pins.send_revocation(state, revoked)
    return out


async def _booking(db: AsyncSession, booking_id: str) -> Booking:
    """The booking the service just changed (in this transaction, so it exists)."""
    booking = await db.get(Booking, booking_id)
    assert booking is not None
    return booking


@router.get("/host/bookings")
async def list_host_bookings(
    *,
    db: Db,
    host: HostUser,
    status: BookingStatus | None = None,
    charger_id: Annotated[str | None, Query(max_length=26, pattern=r"^[0-9A-Za-z]+$")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> BookingPage:
    return await service.list_hosted(
        db,
        host.user_id,
        status=status,
        charger_id=charger_id,
        limit=limit,
        offset=offset,
        now=_now(),
    )
