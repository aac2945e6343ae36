"""Billing a stopped session: price it by the one rule, take the money, post the ledger.

**The marker.** A session row turning ``stopped`` with ``billing_state = 'unbilled'`` *is* the
"to settle" marker: ingest writes it in the same transaction as the stop (cloud/ingest/
writer.py), whether the stop arrives at once or hours later when an offline (PIN) session
syncs. Nothing here runs inside ingest's batch: the provider's HTTP calls happen in the API
process (which also holds the dummy provider's in-memory orders), in :class:`Settler`, a
background job supervised by the API's lifespan.

**The steps, each idempotent by session** (:func:`settle_session`):

1. *price* (one transaction, the session row locked): the bill is :func:`cloud.billing.
   quote.price` of the session's meter delta and times under its charger's tariff; it is
   written to ``sessions.amount_paise`` (``cost_final`` from then on), ``billing_state``
   becomes ``priced``, its booking ``completed`` (:mod:`cloud.bookings.completion`), and
   the driver's prepayment is claimed for the session
   (``payments.session_id``: the booking's payment, or for a walk-up the latest walk-up
   payment made before the unlock);
2. *take the money* (no transaction open): :func:`cloud.payments.service.settle` captures
   and refunds the unused part, each provider call keyed on our ids, so a retry after a
   crash or a failed call repeats nothing;
3. *bill* (one transaction, the row locked again): if still ``priced``, the bill's ledger
   transaction (:func:`cloud.ledger.entries.bill_txn`: host earning, commission, GST, TCS)
   is posted, the GST tax invoice issued (:func:`cloud.invoices.service.issue_invoice`) and
   ``billing_state`` becomes ``settled`` — together, so the bill is posted and invoiced once
   however often the stop is redelivered or the job retried, by one API process or several.

The same job returns the prepayment of a booking that ended unused (cancelled, declined,
lapsed, a no-show: :mod:`cloud.bookings.no_show`), keeping its cancellation fee and billing
it to the host (:func:`release_cancelled`, :mod:`cloud.payments.cancellation`), and what a
used booking's sessions left unclaimed once it ended.

A failed step leaves the session ``priced`` — billed, visible with its amount in
``GET /sessions/{id}`` and its receipt — and the job retries it with exponential backoff.
A bill beyond the prepayment leaves the driver's ledger balance negative: the amount due
(:mod:`cloud.payments.checkout`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import Host, User
from cloud.billing.quote import Quote, Rates, Tariff, price, session_usage
from cloud.billing.service import rates
from cloud.bookings.completion import complete_booking
from cloud.bookings.models import Booking
from cloud.bookings.no_show import mark_no_shows
from cloud.chargers.models import Charger
from cloud.db_errors import DATABASE_ERRORS, is_database_error
from cloud.errors import CloudError
from cloud.invoices.service import interstate, issue_invoice, issue_invoices
from cloud.jobs import every, supervise
from cloud.ledger.entries import bill_txn
from cloud.ledger.service import post, post_all
from cloud.payments import service
from cloud.payments.cancellation import release_booking
from cloud.payments.checkout import HELD, booking_payments, walkup_payment
from cloud.payments.models import Payment, PaymentStatus
from cloud.payments.provider import PaymentProvider
from cloud.sessions.elapsed import billed_elapsed, flag_stepped_clock
from cloud.sessions.models import BillingState, ChargingSession, SessionState, UnlockRequest
from cloud.settings import BillingSettings, load_settings
from cloud.state import AppState
from protocols.enums import CredentialKind

log = logging.getLogger(__name__)

#: Sessions looked at per round (oldest stop first).
BATCH = 100

_OPEN = (BillingState.UNBILLED, BillingState.PRICED)
#: A claimed prepayment, before or after its settlement (a failed one is not claimed again).
HELD_OR_SETTLED = (*HELD, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)

#: Locks, always in this order: the session row (FOR NO KEY UPDATE), then its payment row.
#: NO KEY UPDATE serialises the settlers without blocking the FOR KEY SHARE that a ledger
#: insert naming the session takes — a capture's or refund's, which holds its payment row
#: (FOR UPDATE here made a refund webhook and our bill wait on each other: a deadlock; so did
#: taking the payment before the session in step 3 against step 1: tests/cloud/
#: test_settlement.py races four settlers).
_NO_KEY_UPDATE = {"key_share": True}


@dataclass(frozen=True, slots=True)
class Priced:
    """A session priced in step 1: what steps 2 and 3 need."""

    session_pk: int
    driver_id: str
    host_id: str
    host_gst_registered: bool
    quote: Quote
    #: The first prepayment claimed (named by the bill's entries), or None.
    payment_id: str | None
    #: Every prepayment claimed, oldest first: a booking's and, after an extension, its
    #: top-ups. The bill is taken from them in this order (:func:`allocate`).
    payment_ids: tuple[str, ...] = ()


class Unbillable(CloudError):
    """A stopped session that cannot be billed (no driver or no charger is known for it)."""

    def __init__(self, session_pk: int, why: str) -> None:
        super().__init__(f"session {session_pk} cannot be billed: {why}")
        self.session_pk = session_pk
        self.why = why


async def _owner(
    db: AsyncSession, row: ChargingSession
) -> tuple[str | None, UnlockRequest | None, Booking | None]:
    """Whose session and which booking, found as cloud.sessions.service finds them."""
    unlock = await db.scalar(
        select(UnlockRequest).where(
            UnlockRequest.device_id == row.device_id,
            UnlockRequest.token_jti == row.credential_ref,
        )
    )
    booking_id = row.booking_id or (unlock.booking_id if unlock is not None else None)
    booking = None if booking_id is None else await db.get(Booking, booking_id)
    if booking is None and row.credential_kind is CredentialKind.PIN:
        booking = await db.scalar(
            select(Booking).where(
                and_(Booking.pin_ref == row.credential_ref, Booking.charger_id == row.charger_id)
            )
        )
    owner = row.user_id or (unlock.user_id if unlock is not None else None)
    if owner is None and booking is not None:
        owner = booking.user_id
    return owner, unlock, booking


def bill_of(
    row: ChargingSession,
    charger: Charger,
    platform: Rates,
    *,
    interstate: bool = False,
    booked_until: datetime | None = None,
    elapsed: timedelta | None = None,
) -> Quote:
    """The session's bill by the one rule: its meter delta and its times, GST as IGST for an
    inter-state supply (:func:`cloud.invoices.service.interstate`), and the idle fee for a
    stop after its booking's end (``booked_until``) beyond the charger's grace."""
    assert row.stopped_at is not None
    usage = session_usage(
        energy_wh=max(0, row.energy_wh),
        started_at=row.started_at,
        until=row.stopped_at,
        booked_until=booked_until,
        elapsed=elapsed,
    )
    return price(Tariff.from_charger(charger), usage, platform, interstate=interstate)


def booked_until(booking: Booking | None) -> datetime | None:
    """The end of the session's booking (extended, if it was), or None for a walk-up."""
    if booking is None or booking.period.upper is None:
        return None
    end: datetime = booking.period.upper
    return end


async def _claim(
    db: AsyncSession,
    row: ChargingSession,
    owner: str,
    unlock: UnlockRequest | None,
    booking: Booking | None,
) -> list[Payment]:
    """The prepayments of the session, oldest first: already claimed, else the booking's
    (with an extension's top-ups), else (a walk-up) the latest walk-up payment made before
    the unlock.

    Never a payment of an amount due: it names a *settled* session
    (:func:`cloud.payments.checkout.pay_due`), and a settled session is never priced again
    (:func:`price_session` returns None for it), so the payments found tagged with this,
    unsettled, session are the ones claimed here by an earlier try."""
    claimed = list(
        await db.scalars(
            select(Payment)
            .where(Payment.session_id == row.id, Payment.status.in_(HELD_OR_SETTLED))
            .order_by(Payment.created_at, Payment.id)
            .with_for_update()
        )
    )
    if claimed:
        return claimed
    if booking is not None:
        payments = await booking_payments(db, booking)
    elif unlock is not None:
        walkup = await walkup_payment(db, owner, before=unlock.created_at)
        payments = [] if walkup is None else [walkup]
    else:
        payments = []
    for payment in payments:
        payment.session_id = row.id
    return payments


def allocate(bill_paise: int, authorized: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The part of ``bill_paise`` each prepayment pays, oldest first, each at most its
    authorization (what is left beyond them all is the amount due)."""
    parts = []
    left = bill_paise
    for payment_id, amount in authorized:
        part = min(left, amount)
        parts.append((payment_id, part))
        left -= part
    return parts


async def price_session(
    db: AsyncSession,
    session_pk: int,
    platform: Rates,
    billing: BillingSettings,
    *,
    locked: ChargingSession | None = None,
) -> Priced | None:
    """Step 1, in the caller's transaction: None when there is nothing (left) to bill.
    ``locked``: the session's row, already locked FOR NO KEY UPDATE in this transaction (a
    batch locks them all at once); else it is locked here."""
    row = locked or await db.get(ChargingSession, session_pk, with_for_update=_NO_KEY_UPDATE)
    if row is None or row.state is not SessionState.STOPPED or row.billing_state not in _OPEN:
        return None
    owner, unlock, booking = await _owner(db, row)
    charger = None if row.charger_id is None else await db.get(Charger, row.charger_id)
    if charger is None:
        raise Unbillable(session_pk, "no listed charger for its device and connector")
    if owner is None:
        raise Unbillable(session_pk, "no driver is known for its credential")
    # Priced with the GST split the invoice will print (CGST + SGST, or IGST).
    split = await interstate(db, session_pk, billing=billing)
    elapsed = await billed_elapsed(db, row)
    quote = bill_of(
        row,
        charger,
        platform,
        interstate=split,
        booked_until=booked_until(booking),
        elapsed=elapsed,
    )
    if row.billing_state is BillingState.UNBILLED:
        await flag_stepped_clock(db, row, elapsed)
        row.amount_paise = quote.total_paise
        row.billing_state = BillingState.PRICED
        row.user_id = row.user_id or owner
        if row.booking_id is None and booking is not None:
            row.booking_id = booking.id
        if booking is not None:  # the session is over: so is its booking, the slot frees
            await complete_booking(db, booking)
    payments = await _claim(db, row, owner, unlock, booking)
    host = await db.get(Host, charger.host_id)
    assert host is not None  # a foreign key
    registered = host.host_gst_registered
    return Priced(
        session_pk=session_pk,
        driver_id=owner,
        host_id=charger.host_id,
        host_gst_registered=registered,
        quote=quote,
        payment_id=payments[0].id if payments else None,
        payment_ids=tuple(p.id for p in payments),
    )


async def settle_session(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    session_pk: int,
    *,
    platform: Rates,
    tcs_bp: int,
    billing: BillingSettings | None = None,
) -> bool:
    """Steps 1 to 3 for one stopped session; True when this call posted its bill. Safe to
    call again at any point (module docstring). ``billing``: the settings the invoice is
    issued under (its supplier details); the environment's when None."""
    billing = billing if billing is not None else load_settings().billing
    async with sessions() as db, db.begin():
        priced = await price_session(db, session_pk, platform, billing)
    if priced is None:
        return False
    if priced.payment_ids:
        async with sessions() as db:
            payments = [await db.get(Payment, pid) for pid in priced.payment_ids]
        authorized = [(p.id, p.amount_paise) for p in payments if p is not None]
        status = {p.id: p.status for p in payments if p is not None}
        for payment_id, part in allocate(priced.quote.total_paise, authorized):
            if status[payment_id] in {PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED}:
                await service.settle(sessions, provider, payment_id=payment_id, billed_paise=part)
    async with sessions() as db, db.begin():
        row = await db.get(ChargingSession, session_pk, with_for_update=_NO_KEY_UPDATE)
        assert row is not None
        if row.billing_state is not BillingState.PRICED:
            return False  # another process billed it meanwhile
        for payment_id in priced.payment_ids:
            # Session, then payments, as step 1 takes them. Held before the invoice locks the
            # session FOR UPDATE: a webhook (payment, then a KEY SHARE on the session through
            # its ledger entry) either finished before or waits here for the payment.
            await db.get(Payment, payment_id, with_for_update=True)
        await post(
            db,
            bill_txn(
                session_id=session_pk,
                driver_id=priced.driver_id,
                host_id=priced.host_id,
                quote=priced.quote,
                host_gst_registered=priced.host_gst_registered,
                tcs_bp=tcs_bp,
                payment_id=priced.payment_id,
            ),
        )
        row.billing_state = BillingState.SETTLED
        if priced.quote.total_paise > 0:
            # The tax invoice with the bill, in its transaction: a supply is never billed
            # without its invoice, and its serial is taken only if the bill commits
            # (cloud.invoices.service: gap-free series). A free session gets none.
            await issue_invoice(db, session_pk, quote=priced.quote, billing=billing)
    log.info(
        "session billed",
        extra={
            "session_pk": session_pk,
            "amount_paise": priced.quote.total_paise,
            "payment_id": priced.payment_id,
        },
    )
    return True


async def settle_sessions(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    session_pks: Collection[int],
    *,
    platform: Rates,
    tcs_bp: int,
    billing: BillingSettings | None = None,
) -> int:
    """Steps 1 to 3 for many stopped sessions at once (the settle job's batch): the same
    steps with the same locks and keys as :func:`settle_session`, but each step is one
    database transaction for the whole batch — the pricing, the money
    (:func:`cloud.payments.service.settle_many`), and the bills with their invoices posted
    together. Returns how many this call billed. Raises on the first failure, having
    committed whole steps only (every step is idempotent): the caller then settles the batch
    one session at a time, so one bad session holds back only itself."""
    billing = billing if billing is not None else load_settings().billing
    pks = sorted(set(session_pks))
    if not pks:
        return 0
    async with sessions() as db, db.begin():
        # Every session row first, in id order: two batches never wait on each other's.
        rows = list(
            await db.scalars(
                select(ChargingSession)
                .where(ChargingSession.id.in_(pks))
                .order_by(ChargingSession.id)
                .with_for_update(key_share=True)
            )
        )
        # Their chargers and hosts read once and held (the identity map only keeps objects
        # referenced): pricing and invoicing then find them without a query per session.
        held = await _hold_parties(db, rows)
        by_pk = {row.id: row for row in rows}
        priced = [
            p
            for pk in pks
            if (p := await price_session(db, pk, platform, billing, locked=by_pk.get(pk)))
            is not None
        ]
        claimed = [pid for p in priced for pid in p.payment_ids]
        amounts = await db.execute(
            select(Payment.id, Payment.amount_paise).where(Payment.id.in_(claimed))
        )
        authorized = dict(amounts.tuples().all())
        settleable = set(
            await db.scalars(
                select(Payment.id).where(
                    Payment.id.in_(claimed),
                    Payment.status.in_([PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED]),
                )
            )
        )
    # Each session's bill taken from its payments oldest first (an extension's top-up too).
    parts = {
        pid: part
        for p in priced
        for pid, part in allocate(
            p.quote.total_paise, [(pid, authorized[pid]) for pid in p.payment_ids]
        )
        if pid in settleable
    }
    await service.settle_many(sessions, provider, parts)
    async with sessions() as db, db.begin():
        locked = {
            row.id: row
            for row in await db.scalars(
                select(ChargingSession)
                .where(ChargingSession.id.in_([p.session_pk for p in priced]))
                .order_by(ChargingSession.id)
                .with_for_update(key_share=True)
            )
        }
        held = await _hold_parties(db, list(locked.values()))
        # Another process may have billed some meanwhile.
        due = [p for p in priced if locked[p.session_pk].billing_state is BillingState.PRICED]
        # Sessions, then their payments (in id order), as step 1 takes them; all held before
        # the invoices lock sessions FOR UPDATE (the single-session step 3's reasoning).
        paid = sorted({pid for p in due for pid in p.payment_ids})
        if paid:
            await db.scalars(
                select(Payment.id)
                .where(Payment.id.in_(paid))
                .order_by(Payment.id)
                .with_for_update()
            )
        await post_all(
            db,
            [
                bill_txn(
                    session_id=p.session_pk,
                    driver_id=p.driver_id,
                    host_id=p.host_id,
                    quote=p.quote,
                    host_gst_registered=p.host_gst_registered,
                    tcs_bp=tcs_bp,
                    payment_id=p.payment_id,
                )
                for p in due
            ],
        )
        for p in due:
            locked[p.session_pk].billing_state = BillingState.SETTLED
        # Their invoices (not a free session's), numbered together in the bills' transaction.
        await issue_invoices(
            db, {p.session_pk: p.quote for p in due if p.quote.total_paise > 0}, billing=billing
        )
    del held
    return len(due)


async def _hold_parties(db: AsyncSession, rows: list[ChargingSession]) -> list[object]:
    """The chargers, hosts and drivers of ``rows``, loaded in three queries; the caller holds
    the list so that ``db.get`` finds them in the identity map."""
    charger_ids = {r.charger_id for r in rows if r.charger_id is not None}
    chargers = list(await db.scalars(select(Charger).where(Charger.id.in_(charger_ids))))
    hosts = list(await db.scalars(select(Host).where(Host.id.in_({c.host_id for c in chargers}))))
    users = list(
        await db.scalars(select(User).where(User.id.in_({r.user_id for r in rows if r.user_id})))
    )
    return [*chargers, *hosts, *users]


async def due_sessions(
    db: AsyncSession, *, limit: int = BATCH, waiting: Collection[int] = ()
) -> list[int]:
    """Stopped sessions not yet settled, oldest stop first, but for those ``waiting`` out a
    backoff (so sessions that keep failing cannot fill every batch and starve the rest)."""
    query = (
        select(ChargingSession.id)
        # Literal, as the partial index ix_sessions_to_settle states it (migration 0012): a
        # prepared statement's generic plan cannot match bound parameters to its predicate.
        .where(text("state = 'stopped' AND billing_state IN ('unbilled', 'priced')"))
        .order_by(ChargingSession.stopped_at, ChargingSession.id)
        .limit(limit)
    )
    if waiting:
        query = query.where(ChargingSession.id.not_in(list(waiting)))
    return list(await db.scalars(query))


#: A prepayment its booking no longer needs: the booking cancelled, declined, lapsed or a
#: no-show (cloud/bookings/no_show.py) before any session used it; or, once a used booking's
#: end is ``:after_min`` minutes behind and all its sessions are billed, a payment none of
#: them claimed (a top-up paid after the stop): refunded whole, as its fee is 0. Still
#: authorized, or captured with its refund not yet sent (a retry).
_RELEASABLE = text(
    """
SELECT p.id, b.id FROM payments p
JOIN bookings b ON b.id = p.booking_id
WHERE p.session_id IS NULL
  AND (p.status = 'authorized' OR (p.status = 'captured' AND EXISTS (
        SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.status = 'pending'
          AND r.provider_refund_id IS NULL))
       -- a fee kept but not yet billed (cloud/payments/cancellation.py, step 2)
       OR (b.cancellation_fee_paise > 0 AND p.status IN ('captured', 'partially_refunded')
           AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.booking_id = b.id
                           AND i.kind = 'invoice')))
  AND ((b.status IN ('cancelled', 'declined', 'expired', 'no_show')
        AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.booking_id = b.id)
        AND NOT EXISTS (SELECT 1 FROM unlock_requests u WHERE u.booking_id = b.id
                        AND u.outcome IN ('started', 'offline')))
       OR (b.status IN ('confirmed', 'completed')
           AND upper(b.period) + make_interval(mins => :after_min) <= now()
           AND EXISTS (SELECT 1 FROM sessions s WHERE s.booking_id = b.id)
           -- every session stopped and priced: each has claimed what it was to claim
           AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.booking_id = b.id
                           AND (s.state <> 'stopped' OR s.billing_state = 'unbilled'))))
ORDER BY p.created_at LIMIT :limit"""
)


async def release_cancelled(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    limit: int = BATCH,
    billing: BillingSettings | None = None,
) -> int:
    """Return the prepayments of bookings that ended unused (cancelled, declined, lapsed, or
    marked a no-show here first: :func:`cloud.bookings.no_show.mark_no_shows`): the
    cancellation fee (``bookings.cancellation_fee_paise``, 0 unless the driver cancelled
    late or did not turn up) is kept and billed to the host, the rest refunded
    (:func:`cloud.payments.cancellation.release_booking`, so a retry refunds and bills
    once). A booking whose unlock started a session (or was given its PIN) is left to the
    session's settlement; what its sessions left unclaimed is refunded once its end is
    ``no_show_after_min`` behind. Returns how many were released."""
    billing = billing if billing is not None else load_settings().billing
    after_min = billing.no_show_after_min
    async with sessions() as db, db.begin():
        marked = await mark_no_shows(db, after_min=after_min)
    if marked:
        log.info("bookings marked no-show", extra={"booking_ids": marked})
    async with sessions() as db:
        found = await db.execute(_RELEASABLE, {"limit": limit, "after_min": after_min})
        rows = found.tuples().all()
    for payment_id, booking_id in rows:
        await release_booking(
            sessions,
            provider,
            booking_id=booking_id,
            payment_id=payment_id,
            platform=rates(billing),
            tcs_bp=billing.tcs_bp,
            billing=billing,
        )
    return len(rows)


class Settler:
    """The settle job: every ``settle_interval_s``, settle what stopped. A session that
    fails waits ``settle_backoff_s`` * 2^(failures - 1) (at most ``settle_backoff_max_s``)
    before its next try; the job itself never stops on an error."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: PaymentProvider,
        billing: BillingSettings,
    ) -> None:
        self._sessions = sessions
        self._provider = provider
        self._billing = billing
        self._retry_at: dict[int, tuple[int, float]] = {}
        #: Sessions billed by this process (for logs and tests).
        self.billed = 0

    async def round(self) -> int:
        """One pass over the stopped, unsettled sessions; the number billed."""
        sessions, provider, billing = self._sessions, self._provider, self._billing
        platform = rates(billing)
        now = time.monotonic()
        waiting = [pk for pk, (_, at) in self._retry_at.items() if at > now]
        async with sessions() as db:
            candidates = await due_sessions(db, waiting=waiting)
        billed = 0
        try:
            # The whole batch in a few transactions (settle_sessions); the usual case.
            billed = await settle_sessions(
                sessions,
                provider,
                candidates,
                platform=platform,
                tcs_bp=billing.tcs_bp,
                billing=billing,
            )
            for pk in candidates:
                self._retry_at.pop(pk, None)
            candidates = []
        except Exception as exc:  # noqa: BLE001 -- isolated below, session by session
            # Whole steps only were committed: one session at a time now, each with its own
            # backoff, so a session that keeps failing holds back only itself — also for a
            # failure no one foresaw (a row the code cannot handle), not only ours or the
            # database's: otherwise it would fail every round's batch, for ever (issue 14).
            log.info(
                "settling %s sessions as a batch failed (%s); one by one", len(candidates), exc
            )
        for pk in candidates:
            failures, at = self._retry_at.get(pk, (0, 0.0))
            if at > now:
                continue
            try:
                if await settle_session(
                    sessions,
                    provider,
                    pk,
                    platform=platform,
                    tcs_bp=billing.tcs_bp,
                    billing=billing,
                ):
                    billed += 1
                self._retry_at.pop(pk, None)
            except Exception as exc:  # this session alone waits (see above)
                failures += 1
                delay = min(
                    billing.settle_backoff_max_s, billing.settle_backoff_s * 2 ** (failures - 1)
                )
                self._retry_at[pk] = (failures, time.monotonic() + delay)
                # ERROR once per session, then quietly until it recovers (no log storms).
                level = logging.ERROR if failures == 1 else logging.DEBUG
                unforeseen = not (isinstance(exc, CloudError) or is_database_error(exc))
                log.log(
                    level,
                    "session %s not settled (try %s, next in %.0f s): %r",
                    pk,
                    failures,
                    delay,
                    exc,
                    exc_info=unforeseen,
                )
        self.billed += billed
        try:
            await release_cancelled(sessions, provider, billing=billing)
        except Exception as exc:
            if not (isinstance(exc, CloudError) or is_database_error(exc)):
                raise
            # Every payment in the batch is keyed on its id: the next round resumes.
            log.warning("releasing cancelled bookings' prepayments failed: %s", exc)
        return billed

    async def run(self) -> None:
        """Rounds for ever, under the jobs' supervisor (:func:`cloud.jobs.supervise`): a
        round that fails — the database restarting, or a bug — is logged, counted and backed
        off, and the rounds resume; nothing escapes into the lifespan's task group."""
        await supervise(
            "settle",
            every(self._billing.settle_interval_s, self.round),
            expected=(CloudError, *DATABASE_ERRORS, OSError),
        )


@asynccontextmanager
async def running_settler(state: AppState) -> AsyncIterator[Settler | None]:
    """The settle job for the API's lifespan (None when ``settle_interval_s`` is 0)."""
    if state.settings.billing.settle_interval_s <= 0 or state.payments is None:
        yield None
        return
    settler = Settler(state.sessions, state.payments, state.settings.billing)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(settler.run(), name="settle")
        try:
            yield settler
        finally:
            task.cancel()
