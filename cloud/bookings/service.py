"""Bookings: create, read, cancel, approve, decline, and the keypad PIN (issued and revoked
by :mod:`cloud.bookings.pins`).

Overlap is never checked in Python: the exclusion constraint ``ex_bookings_connector_period``
refuses a second active booking of a connector, and :func:`create_booking` translates that
refusal (SQLSTATE 23P01) into :class:`~cloud.errors.BookingOverlap` — the one place a database
error of this feature becomes one of ours. Concurrent overlapping inserts can also make
PostgreSQL abort one of them as a deadlock (each waits on the other's tentative index entry),
detected only after ``deadlock_timeout``; so a create first takes a transaction-scoped
advisory lock on its connector, and bookings of one connector queue instead of deadlocking.
Should a deadlock or serialization failure still happen, the transaction is retried from the
start after a random pause, and still-losing attempts end as an overlap, never a 500.

Lazy expiry: nothing sweeps pending bookings. A pending booking whose ``expires_at`` has
passed is marked ``expired`` by whichever statement meets it first: the insert of an
overlapping booking on its connector (so a lapsed request never blocks the slot), a read that
would show it. Approving, declining or cancelling a lapsed request answers 409.

Who may see what is decided by the queries (:func:`_visible_to`): the booking's driver, the
host of its charger, or an admin; anyone else gets 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.billing.quote import Tariff, price, window_usage
from cloud.bookings import policy
from cloud.bookings.extension import extension_command
from cloud.bookings.models import ACTIVE_BOOKING_STATUSES, Booking, BookingStatus
from cloud.bookings.pins import booking_pin
from cloud.bookings.schemas import (
    AmountKind,
    BookingCreate,
    BookingOut,
    BookingPage,
    BookingWithPin,
    PinOut,
)
from cloud.chargers import availability
from cloud.chargers.models import (
    Charger,
    Connector,
    ModerationStatus,
    PricingMode,
)
from cloud.columns import ulid_pk
from cloud.constant_time import same
from cloud.db_errors import EXCLUSION_VIOLATION, RETRYABLE_STATES, refusals
from cloud.devices.models import Device
from cloud.errors import (
    BookingOverlap,
    Conflict,
    DatabaseRefused,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from cloud.notifications import events as notify
from cloud.payments.checkout import (
    booking_unpaid_paise,
    require_booking_paid,
    require_nothing_due,
)
from cloud.reviews.service import driver_trust
from cloud.sessions.commands import PreparedCommand
from cloud.sessions.models import ChargingSession, SessionState

log = logging.getLogger(__name__)

#: Attempts at a create that keeps losing a deadlock, and the first pause's ceiling.
CREATE_ATTEMPTS = 5
RETRY_PAUSE_S = 0.01


_CONNECTOR_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _period(start: datetime, end: datetime) -> Range[datetime]:
    return Range(start, end, bounds="[)")


def _bounds(booking: Booking) -> tuple[datetime, datetime]:
    start, end = booking.period.lower, booking.period.upper
    if start is None or end is None:  # the schema never stores an unbounded period
        raise AssertionError(f"booking {booking.id} has an unbounded period")
    return start, end


def hash_pin(secret_key: str, booking_id: str, pin: str) -> str:
    """What ``pin_hash`` stores: an HMAC keyed by the app secret, bound to the booking.

    A slow hash would add nothing: 8 digits are 10^8 guesses, and whoever reads this table
    can read the device's PIN secret too. The hash lets support check a PIN a driver reads
    out, and records that the PIN was shown.
    """
    message = f"cm-booking-pin|{booking_id}|{pin}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def pin_matches(secret_key: str, booking: Booking, pin: str) -> bool:
    if booking.pin_hash is None:
        return False
    return same(booking.pin_hash, hash_pin(secret_key, booking.id, pin))


async def _issue_pin(
    db: AsyncSession,
    booking: Booking,
    *,
    secret_key: str,
    device_id: str,
    connector: int,
    pin_secret: bytes,
) -> PinOut | None:
    # The agent knows itself by its device id: that is the PIN's charger id on the wire.
    issued = await booking_pin(
        db, booking, device_id=device_id, connector=connector, secret=pin_secret
    )
    if issued is None:
        return None
    booking.pin_hash = hash_pin(secret_key, booking.id, issued.pin)
    return PinOut(pin=issued.pin, valid_from=issued.valid_from, valid_until=issued.valid_until)


def to_out(booking: Booking, connector: int, mode: PricingMode) -> BookingOut:
    start, end = _bounds(booking)
    return BookingOut(
        id=booking.id,
        user_id=booking.user_id,
        charger_id=booking.charger_id,
        connector=connector,
        start=start,
        end=end,
        status=booking.status,
        amount_paise=booking.amount_paise,
        amount_kind=AmountKind.EXACT if mode is PricingMode.PER_HOUR else AmountKind.UPPER_BOUND,
        expires_at=booking.expires_at,
        decided_at=booking.decided_at,
        cancelled_at=booking.cancelled_at,
        cancelled_by=booking.cancelled_by,
        cancellation_fee_paise=booking.cancellation_fee_paise,
        note=booking.note,
        created_at=booking.created_at,
        pin_issued=booking.pin_hash is not None,
    )


# --- create -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    charger: Charger
    connector: Connector
    pin_secret: bytes | None


async def _load_target(db: AsyncSession, charger_id: str, number: int) -> _Target:
    row = (
        await db.execute(
            select(Charger, Connector, Device.pin_secret)
            .outerjoin(
                Connector, and_(Connector.charger_id == Charger.id, Connector.number == number)
            )
            .outerjoin(Device, Device.id == Charger.device_id)
            .where(Charger.id == charger_id)
        )
    ).one_or_none()
    # A listing not approved or not listed does not exist for drivers.
    if (
        row is None
        or row[0].moderation_status is not ModerationStatus.APPROVED
        or not row[0].is_listed
    ):
        raise NotFound("charger", charger_id)
    if row[1] is None:
        raise InvalidRequest(f"charger {charger_id!r} has no connector {number}", field="connector")
    return _Target(row[0], row[1], row[2])


async def _check_open(db: AsyncSession, charger: Charger, start: datetime, end: datetime) -> None:
    """Opening hours and blocked periods (the listings' rule, :mod:`cloud.chargers.availability`);
    the field named is the side of the range that falls outside."""
    schedule = await availability.load_schedule(db, charger.id, start=start, end=end)
    if availability.is_open(schedule, start, end):
        return
    if schedule.blocked:
        first = min(b.start for b in schedule.blocked)
        raise InvalidRequest(
            "the host has closed the charger for part of this time",
            field="start" if first <= start else "end",
        )
    first_slot_open = availability.is_open(schedule, start, start + policy.SLOT)
    raise InvalidRequest(
        "the charger is not open for all of this time",
        field="end" if first_slot_open else "start",
    )


@dataclass(frozen=True, slots=True)
class NewBooking:
    """A driver's booking request and what it is decided with."""

    body: BookingCreate
    user_id: str
    #: ``app.secret_key``: keys the stored PIN hash.
    secret_key: str
    approval_ttl_s: int
    now: datetime


async def _create_once(db: AsyncSession, request: NewBooking) -> BookingWithPin:
    body, now = request.body, request.now
    # An amount due from an earlier session blocks new bookings until paid (402).
    await require_nothing_due(db, request.user_id)
    target = await _load_target(db, body.charger_id, body.connector)
    charger, connector = target.charger, target.connector
    await _check_open(db, charger, body.start, body.end)
    period = _period(body.start, body.end)
    # Queue behind other bookings of this connector until commit. Not for correctness (the
    # exclusion constraint is that): concurrent overlapping inserts into the GiST index wait
    # on each other's tentative entries and PostgreSQL breaks the cycles only after
    # deadlock_timeout (1 s), so a race of 200 spent seconds in deadlocks. One lock per
    # transaction cannot form a cycle.
    await db.execute(_CONNECTOR_LOCK, {"key": f"cm-booking|{connector.id}"})
    # Lazy expiry: a lapsed request on this connector and time must not block the slot.
    await db.execute(
        update(Booking)
        .where(
            Booking.connector_id == connector.id,
            Booking.status == BookingStatus.PENDING,
            Booking.expires_at <= now,
            Booking.period.overlaps(period),
        )
        .values(status=BookingStatus.EXPIRED)
        .execution_options(synchronize_session=False)
    )
    # The booking's amount: the window's quote, GST included (cloud.billing.quote).
    estimate = price(
        Tariff.from_charger(charger), window_usage(body.end - body.start, connector.max_power_w)
    )
    # Instant book, unless hosts' private ratings of this driver ask for the host's approval.
    instant = charger.instant_book and policy.instant_book_allowed(
        await driver_trust(db, request.user_id, charger.host_id)
    )
    booking = Booking(
        id=ulid_pk(),
        created_at=now,
        user_id=request.user_id,
        charger_id=charger.id,
        connector_id=connector.id,
        period=period,
        status=BookingStatus.CONFIRMED if instant else BookingStatus.PENDING,
        amount_paise=estimate.total_paise,
        expires_at=(
            None if instant else min(now + timedelta(seconds=request.approval_ttl_s), body.end)
        ),
        decided_at=now if instant else None,
        note=body.note,
    )
    pin = None
    # The PIN unlocks the relay offline, so it is shown only once nothing is left to pay:
    # at once for a free booking, else by POST /bookings/{id}/pin after the payment (402
    # until then), as the QR unlock needs the payment too.
    if (
        instant
        and booking.amount_paise <= 0
        and target.pin_secret is not None
        and charger.device_id is not None
    ):
        pin = await _issue_pin(
            db,
            booking,
            secret_key=request.secret_key,
            device_id=charger.device_id,
            connector=connector.number,
            pin_secret=target.pin_secret,
        )
    # Its notification goes into the outbox in this transaction, before the insert below.
    await notify.booking_created(db, booking, charger)
    db.add(booking)
    # The exclusion constraint speaks here. Nothing but the commit follows the insert: an
    # overlapping insert waits on this transaction's index entry until it ends.
    await db.flush()
    out = to_out(booking, connector.number, charger.pricing_mode)
    return BookingWithPin(**out.model_dump(), pin=pin)


async def create_booking(
    sessions: async_sessionmaker[AsyncSession], request: NewBooking
) -> BookingWithPin:
    """Book the request's connector and time for its driver: confirmed at once on an
    instant-book charger (with a PIN when the booking costs nothing and the charger's device
    has a PIN secret; a paid booking's PIN comes from :func:`reveal_pin` once paid), else
    pending until the host decides or ``approval_ttl_s`` passes.

    Runs its own transactions: a deadlock victim is retried from the start.
    """
    body = request.body
    policy.check_range(body.start, body.end, request.now)
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with refusals():
                async with sessions() as db, db.begin():
                    return await _create_once(db, request)
        except DatabaseRefused as exc:
            state = exc.sqlstate
            if state == EXCLUSION_VIOLATION:
                raise BookingOverlap(f"{body.charger_id}/{body.connector}") from exc
            if state not in RETRYABLE_STATES:
                raise
            if attempt == CREATE_ATTEMPTS:
                # Only overlapping inserts deadlock each other here: after this many rounds
                # the slot is contested and, for this caller, taken.
                log.warning("booking insert kept deadlocking", extra={"attempts": attempt})
                raise BookingOverlap(f"{body.charger_id}/{body.connector}") from exc
            # A random pause, so the same transactions do not re-form the same cycle.
            pause = random.uniform(0, RETRY_PAUSE_S * 2**attempt)  # noqa: S311 -- jitter, not a secret
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


# --- read ---------------------------------------------------------------------------------


def _hosted_by(user_id: str) -> ColumnElement[bool]:
    """The booking's charger belongs to the host account of ``user_id``."""
    return exists().where(Host.id == Charger.host_id, Host.user_id == user_id)


def _visible_to(principal: Principal) -> ColumnElement[bool]:
    if principal.has(Role.ADMIN):
        return true()
    return or_(Booking.user_id == principal.user_id, _hosted_by(principal.user_id))


def _with_details() -> Select[tuple[Booking, int, PricingMode]]:
    return (
        select(Booking, Connector.number, Charger.pricing_mode)
        .join(Connector, Connector.id == Booking.connector_id)
        .join(Charger, Charger.id == Booking.charger_id)
    )


async def _expire_lapsed(db: AsyncSession, now: datetime, *where: ColumnElement[bool]) -> None:
    await db.execute(
        update(Booking)
        .where(Booking.status == BookingStatus.PENDING, Booking.expires_at <= now, *where)
        .values(status=BookingStatus.EXPIRED)
        .execution_options(synchronize_session=False)
    )


async def get_booking(
    db: AsyncSession, principal: Principal, booking_id: str, now: datetime
) -> BookingOut:
    await _expire_lapsed(db, now, Booking.id == booking_id)
    row = (
        await db.execute(_with_details().where(Booking.id == booking_id, _visible_to(principal)))
    ).one_or_none()
    if row is None:
        raise NotFound("booking", booking_id)
    return to_out(*row)


async def _page(
    db: AsyncSession, query: Select[tuple[Booking, int, PricingMode]], limit: int, offset: int
) -> BookingPage:
    rows = (
        await db.execute(
            query.order_by(func.lower(Booking.period).desc(), Booking.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    items = [to_out(*row) for row in rows[:limit]]
    more = len(rows) > limit
    return BookingPage(
        items=items, limit=limit, offset=offset, next_offset=offset + limit if more else None
    )


async def list_mine(
    db: AsyncSession,
    user_id: str,
    *,
    status: BookingStatus | None,
    limit: int,
    offset: int,
    now: datetime,
) -> BookingPage:
    """The caller's own bookings, latest start first."""
    await _expire_lapsed(db, now, Booking.user_id == user_id)
    query = _with_details().where(Booking.user_id == user_id)
    if status is not None:
        query = query.where(Booking.status == status)
    return await _page(db, query, limit, offset)


async def list_hosted(
    db: AsyncSession,
    user_id: str,
    *,
    status: BookingStatus | None,
    charger_id: str | None,
    limit: int,
    offset: int,
    now: datetime,
) -> BookingPage:
    """Bookings of the chargers the caller hosts, latest start first."""
    hosted = Booking.charger_id.in_(
        select(Charger.id).join(Host, Host.id == Charger.host_id).where(Host.user_id == user_id)
    )
    await _expire_lapsed(db, now, hosted)
    query = _with_details().where(hosted)
    if status is not None:
        query = query.where(Booking.status == status)
    if charger_id is not None:
        query = query.where(Booking.charger_id == charger_id)
    return await _page(db, query, limit, offset)


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Locked:
    booking: Booking
    charger: Charger
    connector: int
    #: The caller's relation to the booking: "driver", "host" or "admin".
    role: Role


async def _lock(db: AsyncSession, principal: Principal, booking_id: str) -> _Locked:
    """The booking, row-locked, and who the caller is to it (404 if nobody)."""
    row = (
        await db.execute(
            select(Booking, Charger, Connector.number, _hosted_by(principal.user_id))
            .join(Charger, Charger.id == Booking.charger_id)
            .join(Connector, Connector.id == Booking.connector_id)
            .where(Booking.id == booking_id)
            .with_for_update(of=Booking)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("booking", booking_id)
    booking, charger, number, is_host = row
    if booking.user_id == principal.user_id:
        role = Role.DRIVER
    elif is_host:
        role = Role.HOST
    elif principal.has(Role.ADMIN):
        role = Role.ADMIN
    else:
        raise NotFound("booking", booking_id)
    return _Locked(booking, charger, number, role)


def _lapsed(booking: Booking, now: datetime) -> bool:
    return (
        booking.status is BookingStatus.PENDING
        and booking.expires_at is not None
        and booking.expires_at <= now
    )


async def _decide(
    db: AsyncSession, principal: Principal, booking_id: str, now: datetime, *, approve: bool
) -> BookingOut:
    locked = await _lock(db, principal, booking_id)
    booking = locked.booking
    if locked.role is not Role.HOST:
        # The driver (or an admin) can see the booking but only its host decides.
        raise Forbidden("only the charger's host approves or declines a booking")
    if _lapsed(booking, now):
        raise Conflict(
            f"the booking request lapsed at {booking.expires_at.isoformat()}"  # type: ignore[union-attr]
            " without a decision",
            entity="booking",
            key=booking_id,
        )
    if booking.status is not BookingStatus.PENDING:
        raise Conflict(
            f"the booking is {booking.status.value}, not pending", entity="booking", key=booking_id
        )
    booking.status = BookingStatus.CONFIRMED if approve else BookingStatus.DECLINED
    booking.decided_at = now
    booking.expires_at = None
    await db.flush()
    await notify.booking_decided(db, booking, locked.charger)
    await db.refresh(booking, ["updated_at"])
    return to_out(booking, locked.connector, locked.charger.pricing_mode)


async def approve_booking(
    db: AsyncSession, principal: Principal, booking_id: str, now: datetime
) -> BookingOut:
    """Confirm a pending booking (the charger's host only). The PIN is not in the answer:
    it is the driver's, fetched once with :func:`reveal_pin`."""
    return await _decide(db, principal, booking_id, now, approve=True)


async def decline_booking(
    db: AsyncSession, principal: Principal, booking_id: str, now: datetime
) -> BookingOut:
    return await _decide(db, principal, booking_id, now, approve=False)


async def cancel_booking(
    db: AsyncSession, principal: Principal, booking_id: str, now: datetime
) -> BookingOut:
    """Cancel a pending or confirmed booking that has not ended, by its driver (the late
    fee may apply), its charger's host or an admin (free for the driver)."""
    locked = await _lock(db, principal, booking_id)
    booking = locked.booking
    start, end = _bounds(booking)
    if _lapsed(booking, now):
        raise Conflict("the booking request lapsed", entity="booking", key=booking_id)
    if booking.status not in ACTIVE_BOOKING_STATUSES:
        raise Conflict(
            f"the booking is already {booking.status.value}", entity="booking", key=booking_id
        )
    if now >= end:
        raise Conflict("the booking is over", entity="booking", key=booking_id)
    booking.cancellation_fee_paise = policy.cancellation_fee(
        now=now,
        start=start,
        confirmed=booking.status is BookingStatus.CONFIRMED,
        by_driver=locked.role is Role.DRIVER,
        free_cancel_before_min=locked.charger.free_cancel_before_min,
        late_cancel_fee_paise=locked.charger.late_cancel_fee_paise,
        amount_paise=booking.amount_paise,
    )
    booking.status = BookingStatus.CANCELLED
    booking.cancelled_at = now
    booking.cancelled_by = locked.role.value
    booking.expires_at = None
    await db.flush()
    await notify.booking_cancelled(db, booking, locked.charger)
    await db.refresh(booking, ["updated_at"])
    return to_out(booking, locked.connector, locked.charger.pricing_mode)


@dataclass(frozen=True, slots=True)
class Extension:
    """A driver's request to run their booking until ``end``."""

    booking_id: str
    end: datetime
    principal: Principal
    now: datetime


@dataclass(frozen=True, slots=True)
class Extended:
    """An extension committed: the answer, and the device and running session (if any) the
    agent's authorization is to be extended for (sent after the commit)."""

    out: BookingOut
    extra_paise: int
    topup_paise: int
    #: The ``extend_session`` command for the booking's running session (None: none runs).
    command: PreparedCommand | None


async def _running_session(db: AsyncSession, booking: Booking) -> str | None:
    """The agent's id of the booking's session still running (started, not stopped)."""
    found: str | None = await db.scalar(
        select(ChargingSession.device_session_id)
        .where(
            ChargingSession.booking_id == booking.id,
            ChargingSession.state != SessionState.STOPPED,
        )
        .order_by(ChargingSession.id.desc())
        .limit(1)
    )
    if found is not None or booking.pin_ref is None:
        return found
    # A PIN session the cloud has not tied to its booking yet (ingest matches it by pin_ref).
    by_pin: str | None = await db.scalar(
        select(ChargingSession.device_session_id)
        .where(
            ChargingSession.credential_ref == booking.pin_ref,
            ChargingSession.charger_id == booking.charger_id,
            ChargingSession.state != SessionState.STOPPED,
        )
        .limit(1)
    )
    return by_pin


async def _extend_once(db: AsyncSession, ext: Extension) -> Extended:
    locked = await _lock(db, ext.principal, ext.booking_id)
    booking, charger = locked.booking, locked.charger
    if locked.role is not Role.DRIVER:
        # Only the booking's driver extends it (the host and admins see it, nobody else).
        raise NotFound("booking", ext.booking_id)
    start, end = _bounds(booking)
    if booking.status is not BookingStatus.CONFIRMED or not start <= ext.now < end:
        raise Conflict(
            "only a running confirmed booking (started, not ended) can be extended",
            entity="booking",
            key=ext.booking_id,
        )
    policy.check_extension(start, end, ext.end)
    # An amount due blocks more charging time as it blocks a new booking (402).
    await require_nothing_due(db, booking.user_id)
    await _check_open(db, charger, end, ext.end)
    connector = await db.get(Connector, booking.connector_id)
    assert connector is not None  # a foreign key
    # The same queue and lazy expiry as a create (the exclusion constraint decides).
    await db.execute(_CONNECTOR_LOCK, {"key": f"cm-booking|{connector.id}"})
    added = _period(end, ext.end)
    await db.execute(
        update(Booking)
        .where(
            Booking.connector_id == connector.id,
            Booking.status == BookingStatus.PENDING,
            Booking.expires_at <= ext.now,
            Booking.period.overlaps(added),
        )
        .values(status=BookingStatus.EXPIRED)
        .execution_options(synchronize_session=False)
    )
    # The extra amount by the one rule: the longer window's quote less the shorter one's,
    # both under the tariff now (so the booking's amount stays the window's quote when the
    # tariff has not changed, and an earlier price is kept when it has).
    tariff = Tariff.from_charger(charger)
    longer = price(tariff, window_usage(ext.end - start, connector.max_power_w)).total_paise
    shorter = price(tariff, window_usage(end - start, connector.max_power_w)).total_paise
    extra = max(0, longer - shorter)
    booking.period = _period(start, ext.end)
    booking.amount_paise += extra
    # The exclusion constraint speaks here (another booking holds the added time).
    await db.flush()
    await db.refresh(booking, ["updated_at"])
    topup = await booking_unpaid_paise(db, booking)
    running = await _running_session(db, booking)
    command = None
    if running is not None and charger.device_id is not None:
        command = await extension_command(
            db, charger.device_id, running, until=ext.end, now=ext.now
        )
    return Extended(
        out=to_out(booking, locked.connector, charger.pricing_mode),
        extra_paise=extra,
        topup_paise=topup,
        command=command,
    )


async def extend_booking(sessions: async_sessionmaker[AsyncSession], ext: Extension) -> Extended:
    """Run the caller's running booking until ``ext.end`` while its connector is free then:
    409 ``booking-overlap`` when another booking holds that time (the exclusion constraint
    decides, as for a create). Runs its own transactions, retried after a deadlock."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with refusals():
                async with sessions() as db, db.begin():
                    return await _extend_once(db, ext)
        except DatabaseRefused as exc:
            state = exc.sqlstate
            if state == EXCLUSION_VIOLATION:
                raise BookingOverlap(ext.booking_id) from exc
            if state not in RETRYABLE_STATES or attempt == CREATE_ATTEMPTS:
                raise
            pause = random.uniform(0, RETRY_PAUSE_S * 2**attempt)  # noqa: S311 -- jitter, not a secret
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


async def reveal_pin(
    db: AsyncSession, principal: Principal, booking_id: str, secret_key: str, now: datetime
) -> PinOut:
    """The keypad PIN of the caller's confirmed booking, once (a free instant booking
    already got it in the create answer). 409 if it was shown before, the booking is not
    confirmed or over, or the charger's device has no PIN secret yet."""
    locked = await _lock(db, principal, booking_id)
    booking = locked.booking
    if locked.role is not Role.DRIVER:
        raise NotFound("booking", booking_id)
    _, end = _bounds(booking)
    if booking.status is not BookingStatus.CONFIRMED or now >= end:
        raise Conflict(
            "only an upcoming confirmed booking has a PIN", entity="booking", key=booking_id
        )
    if booking.pin_hash is not None:
        raise Conflict("the PIN was already shown", entity="booking", key=booking_id)
    # The PIN unlocks the charger offline: paid first, as the QR unlock is (402).
    await require_booking_paid(db, booking)
    device_id = locked.charger.device_id
    secret: Any = None
    if device_id is not None:
        secret = await db.scalar(select(Device.pin_secret).where(Device.id == device_id))
    if device_id is None or secret is None:
        raise Conflict(
            "this charger's device has no PIN secret yet", entity="booking", key=booking_id
        )
    pin = await _issue_pin(
        db,
        booking,
        secret_key=secret_key,
        device_id=device_id,
        connector=locked.connector,
        pin_secret=bytes(secret),
    )
    if pin is None:
        raise Conflict("no PIN can be issued for this booking", entity="booking", key=booking_id)
    await db.flush()
    return pin
