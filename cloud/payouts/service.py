"""Payouts in the database, executed through a :class:`~cloud.payments.provider.PaymentProvider`.

- :func:`request_payout` — a host asks for up to their payable balance. The host's row is
  locked (``SELECT … FOR UPDATE``) before the balance is read and the payout inserted, so
  concurrent requests (two tabs, the weekly job) queue on it and each sees the others'
  reservations: requested + paid never exceeds what is past the hold.
- :func:`approve` / :func:`reject` — an admin's decision on a pending payout. Approval
  checks again, under the same lock, that the host's earnings still cover every
  reservation (a dispute may have taken some back), then executes.
- :func:`execute` — the provider call, outside any database transaction (no lock is held
  across the network), keyed on the payout's id (the provider pays a reference once); the
  ledger debit is posted with the one move to ``paid`` on the locked row, and the database
  refuses a second debit for the same payout (``uq_ledger_entries_payout_once``), so a
  retried execution — a crash after the provider paid, two admins clicking — pays and books
  once.
- Every decision and outcome is audited in its own transaction (cloud/audit/):
  ``payout.request``, ``payout.approve``, ``payout.reject``, ``payout.automatic``, and the
  provider's verdict ``payout.paid`` / ``payout.failed`` (the system's act). A host whose
  KYC is not verified cannot request a payout (:class:`~cloud.errors.KycRequired`, 403).
- :func:`run_weekly` — ``chargemitra-cloud payouts run``: each host with ``weekly_payouts``
  and a verified KYC gets one automatic payout of their payable balance per week
  (``uq_payouts_automatic_week``), executed without an admin; payouts left ``processing``
  by an earlier failure are retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import Host, KycStatus
from cloud.audit.service import SYSTEM, Actor, record
from cloud.errors import CloudError, Conflict, KycRequired, NotFound, PaymentProviderError
from cloud.kyc.storage import Sealer
from cloud.ledger.accounts import host_account
from cloud.ledger.entries import payout_reversal_txn, payout_txn
from cloud.ledger.service import HostBalance, host_balance, host_weekly_earned, post
from cloud.notifications import events as notify
from cloud.payments.models import Payment, PaymentStatus, Payout, PayoutStatus
from cloud.payments.provider import (
    EventKind,
    PaymentProvider,
    PayoutRequest,
    PayoutResult,
    WebhookEvent,
)
from cloud.payouts import accounts, rules

log = logging.getLogger(__name__)
#: Weeks of the earnings chart start on Monday in India.
IST = ZoneInfo("Asia/Kolkata")


async def host_of_user(db: AsyncSession, user_id: str) -> Host:
    """The host row of the signed-in ``user_id`` (a 404 for a user who is no host)."""
    host = await db.scalar(select(Host).where(Host.user_id == user_id))
    if host is None:
        raise NotFound("host", user_id)
    return host


async def _lock_host(db: AsyncSession, host_id: str) -> Host:
    # Every change to what a host may be paid takes this lock first, then the payout's:
    # one order, so two of them never deadlock.
    # populate_existing: POST /host/payouts read the host (host_of_user) before this lock;
    # without it the session would hand back that copy, unrefreshed.
    host = await db.get(Host, host_id, with_for_update=True, populate_existing=True)
    if host is None:
        raise NotFound("host", host_id)
    return host


async def earnings(
    db: AsyncSession, host_id: str, *, now: datetime, hold: timedelta
) -> HostBalance:
    return await host_balance(db, host_id, now=now, hold=hold)


async def weekly_earnings(
    db: AsyncSession, host_id: str, *, now: datetime, weeks: int
) -> list[tuple[date, int]]:
    """The last ``weeks`` weeks' earnings (Monday in IST, paise), oldest first, the current
    week last; a week without earnings is 0. The same entries as :func:`earnings`'s
    ``earned``."""
    this_week = rules.week_start(now.astimezone(IST)).date()
    mondays = [this_week - timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]
    since = datetime.combine(mondays[0], time(0), IST)
    found = await host_weekly_earned(db, host_id, since=since)
    return [(monday, found.get(monday, 0)) for monday in mondays]


async def _period_start(db: AsyncSession, host: Host, period_end: datetime) -> datetime:
    """Where a new payout's period begins: the end of the host's last payout not given up,
    else when the host joined."""
    last = await db.scalar(
        select(func.max(Payout.period_end)).where(
            Payout.host_id == host.id,
            Payout.status.not_in([PayoutStatus.REJECTED, PayoutStatus.FAILED]),
        )
    )
    start: datetime = last or host.created_at
    return min(start, period_end)


async def request_payout(
    db: AsyncSession,
    *,
    host_id: str,
    amount_paise: int | None,
    now: datetime,
    hold: timedelta,
    requested_by: str | None,
    actor: Actor | None = None,
) -> Payout:
    """A pending payout of ``amount_paise`` (None: the whole payable balance) for
    ``host_id``, in the caller's transaction; :class:`KycRequired` unless the host's KYC is
    verified; :class:`Conflict` when it exceeds the payable balance (or nothing is
    payable). Audited as ``payout.request`` (``actor``; default: ``requested_by`` as host)."""
    host = await _lock_host(db, host_id)
    if host.kyc_status is not KycStatus.VERIFIED:
        raise KycRequired(host_id, host.kyc_status.value)
    balance = await host_balance(db, host_id, now=now, hold=hold)
    amount = balance.payable_paise if amount_paise is None else amount_paise
    if type(amount) is not int or amount <= 0 or amount > balance.payable_paise:
        raise Conflict(
            f"a payout of {amount} paise exceeds the payable balance of "
            f"{balance.payable_paise} paise",
            entity="payout",
            key=host_id,
        )
    payout = Payout(
        host_id=host_id,
        amount_paise=amount,
        period_start=await _period_start(db, host, now),
        period_end=now,
        status=PayoutStatus.PENDING,
        requested_by=requested_by,
    )
    db.add(payout)
    await db.flush()
    await record(
        db,
        actor or Actor(user_id=requested_by, kind="host"),
        action="payout.request",
        entity="payout",
        entity_id=payout.id,
        after={"status": payout.status, "amount_paise": amount, "host_id": host_id},
    )
    return payout


def _admin(admin_id: str | None) -> Actor:
    return SYSTEM if admin_id is None else Actor(user_id=admin_id, kind="admin")


async def _covered(db: AsyncSession, host_id: str, now: datetime, hold: timedelta) -> None:
    """Raise :class:`Conflict` when the host's earnings past the hold no longer cover every
    reservation and payment (a dispute took money back after the request)."""
    balance = await host_balance(db, host_id, now=now, hold=hold)
    if balance.payable_paise < 0:
        raise Conflict(
            f"host {host_id}'s earnings no longer cover its payouts "
            f"({-balance.payable_paise} paise short): reject a request first",
            entity="payout",
            key=host_id,
        )


async def approve(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    payout_id: str,
    admin_id: str | None,
    now: datetime,
    hold: timedelta,
    sealer: Sealer | None,
    actor: Actor | None = None,
) -> Payout:
    """Approve a pending payout and execute it (``sealer`` opens a bank account number:
    cloud/payouts/accounts.py); for one already ``processing`` (an earlier
    execution failed midway), retry the execution; a paid one is answered as it is. The
    approval is audited (``payout.approve``; ``actor`` default: ``admin_id`` as admin)."""
    async with sessions() as db, db.begin():
        found = await db.get(Payout, payout_id)
        if found is None:
            raise NotFound("payout", payout_id)
        await _lock_host(db, found.host_id)
        payout = await _lock_payout(db, payout_id)
        if payout.status is PayoutStatus.PAID:
            return payout
        if payout.status is PayoutStatus.PENDING:
            await _covered(db, payout.host_id, now, hold)
            payout.status = PayoutStatus.PROCESSING
            payout.decided_by = admin_id
            payout.decided_at = now
            await record(
                db,
                actor or _admin(admin_id),
                action="payout.approve",
                entity="payout",
                entity_id=payout.id,
                before={"status": PayoutStatus.PENDING},
                after={"status": payout.status, "amount_paise": payout.amount_paise},
            )
        elif payout.status is not PayoutStatus.PROCESSING:
            raise Conflict(
                f"payout {payout_id} is {payout.status.value}", entity="payout", key=payout_id
            )
    return await execute(sessions, provider, payout_id=payout_id, sealer=sealer)


async def reject(
    db: AsyncSession,
    *,
    payout_id: str,
    admin_id: str,
    reason: str,
    now: datetime,
    actor: Actor | None = None,
) -> Payout:
    """Reject a pending payout: its amount is payable again. Audited (``payout.reject``)."""
    payout = await _lock_payout(db, payout_id)
    if not rules.can_move(payout.status, PayoutStatus.REJECTED):
        raise Conflict(
            f"payout {payout_id} is {payout.status.value}, not pending",
            entity="payout",
            key=payout_id,
        )
    before = {"status": payout.status}
    payout.status = PayoutStatus.REJECTED
    payout.decided_by = admin_id
    payout.decided_at = now
    payout.note = reason[:500]
    await record(
        db,
        actor or _admin(admin_id),
        action="payout.reject",
        entity="payout",
        entity_id=payout.id,
        before=before,
        after={"status": payout.status},
        data={"reason": payout.note},
    )
    return payout


async def execute(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    payout_id: str,
    sealer: Sealer | None,
) -> Payout:
    """Send a ``processing`` payout to the provider and record the answer. Safe to call again
    at any point: the provider pays a reference once, and the ledger debit is posted with
    the one move to ``paid``.

    The host's payout account (cloud/payouts/accounts.py) is registered with the provider
    first if it has not been (RazorpayX's contact and fund account, made once and stored).
    A definite refusal (:data:`cloud.payouts.rules.DEFINITE_FAILURES`, e.g. a provider that
    cannot pay out, a destination it refuses) fails the payout, releasing its amount; any
    other provider error leaves it ``processing`` (the money may have left) and is raised."""
    async with sessions() as db:
        payout = await db.get(Payout, payout_id)
        if payout is None:
            raise NotFound("payout", payout_id)
        if payout.status is not PayoutStatus.PROCESSING:
            return payout
        account = await accounts.get_account(db, payout.host_id)
        ref = account.destination_ref if account else None
        kind = account.kind if account else None
        # The number is opened only to register the account: a registered one is paid by its
        # reference, so a missing or rotated key does not stop its payouts.
        sent = accounts.destination(account, sealer) if account and ref is None else None
    try:
        if sent is not None and ref is None:
            refs = await provider.payout_destination(sent)
            async with sessions() as db, db.begin():
                await accounts.store_refs(db, sent, refs, sealer)
            ref = refs.destination_ref
        result = await provider.payout(
            PayoutRequest(
                reference=payout.id,
                amount_paise=payout.amount_paise,
                destination=ref or "",
                kind=kind,
            )
        )
    except PaymentProviderError as exc:
        definite = exc.code in rules.DEFINITE_FAILURES
        async with sessions() as db, db.begin():
            row = await _lock_payout(db, payout_id)
            row.note = f"{exc.provider} payout: {exc.code}"[:500]
            if definite and row.status is PayoutStatus.PROCESSING:
                row.status = PayoutStatus.FAILED
                await _record_outcome(db, row)
        if definite:
            log.warning("payout %s failed at %s: %s", payout_id, exc.provider, exc.code)
            return row
        raise
    async with sessions() as db, db.begin():
        return await _settle(db, payout_id, result)


async def _settle(db: AsyncSession, payout_id: str, result: PayoutResult) -> Payout:
    """Apply the provider's word on a payout (its answer, or a payout webhook) in ``db``'s
    transaction: ``processing`` moves to ``paid`` (debited once) or ``failed``; any other
    status, or a payout no longer processing, is left as it is."""
    payout = await _lock_payout(db, payout_id)
    if payout.status is not PayoutStatus.PROCESSING:
        return payout  # another execution (or webhook) recorded it first
    payout.provider_ref = payout.provider_ref or result.payout_ref[:64] or None
    if result.status in rules.PROVIDER_PAID:
        payout.status = PayoutStatus.PAID
        # With the one move to paid, on the locked row: booked once however often the
        # execution is retried (and uq_ledger_entries_payout_once backs that up).
        await post(
            db,
            payout_txn(
                payout_id=payout.id, host_id=payout.host_id, amount_paise=payout.amount_paise
            ),
        )
        await notify.payout_paid(db, payout)  # the host hears, in the outbox
    elif result.status in rules.PROVIDER_FAILED:
        payout.status = PayoutStatus.FAILED
        payout.note = f"provider: {result.status}"
    if payout.status is not PayoutStatus.PROCESSING:
        await _record_outcome(db, payout)
    # Anything else (queued, pending at the provider): still processing; a retry asks
    # again with the same reference, and the provider's payout webhook settles it.
    return payout


async def apply_payout_event(db: AsyncSession, event: WebhookEvent) -> bool | None:
    """A verified payout webhook (RazorpayX ``payout.processed`` / ``payout.reversed`` …), in
    the webhook's transaction: True when it moved our payout, False when it changed nothing
    (not ``processing`` any more — a reversal after ``paid`` is logged for an admin, the
    state machine has no way back from paid), None when it names no payout of ours."""
    payout: Payout | None = None
    if event.payout_receipt:
        payout = await db.get(Payout, event.payout_receipt)
    if payout is None and event.payout_ref:
        payout = await db.scalar(select(Payout).where(Payout.provider_ref == event.payout_ref))
    if payout is None:
        return None
    if event.kind is EventKind.PAYOUT_REVERSED:
        return await _reverse(db, payout, event)
    if event.amount_paise is not None and event.amount_paise != payout.amount_paise:
        log.warning(
            "%s payout webhook %s: %s paise for payout %s of %s paise, ignored",
            event.provider,
            event.event_id,
            event.amount_paise,
            payout.id,
            payout.amount_paise,
        )
        return False
    await _lock_host(db, payout.host_id)  # the lock order of approve()
    payout = await _lock_payout(db, payout.id)
    if payout.status is not PayoutStatus.PROCESSING:
        if payout.status is PayoutStatus.PAID and event.kind is EventKind.PAYOUT_FAILED:
            log.error("payout %s was reversed after it was paid: an admin must act", payout.id)
        return False
    status = "processed" if event.kind is EventKind.PAYOUT_PROCESSED else "reversed"
    done = await _settle(db, payout.id, PayoutResult(event.payout_ref or "", status))
    return done.status is not PayoutStatus.PROCESSING


#: What a payout's debit stands at on its host's account: the payout less what came back.
_NET_PAID = text(
    "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries "
    "WHERE payout_id = :payout AND account = :account AND source = 'payout'"
)


async def _reverse(db: AsyncSession, payout: Payout, event: WebhookEvent) -> bool:
    """A paid payout pulled back, in part or whole (Stripe ``transfer.reversed``, carrying
    the transfer's reversed total so far): what was not yet undone is posted back to the
    host's account (:func:`cloud.ledger.entries.payout_reversal_txn`: payable again) and
    audited. The total makes it idempotent and order-proof: a repeated or late event
    (a smaller total) finds nothing left to undo. The payout stays ``paid`` — it was — with
    the reversal in its note and the audit log. A reversal of a payout still ``processing``
    is a 409 (:class:`Conflict`), not stored, so the provider retries it."""
    await _lock_host(db, payout.host_id)  # the lock order of approve()
    payout = await _lock_payout(db, payout.id)
    reversed_total = event.amount_paise
    if payout.status is PayoutStatus.PROCESSING and reversed_total:
        # The transfer exists but its answer is not recorded yet (the debit is posted with
        # the move to paid): stored now as stale, this reversal would be lost for good.
        # Refused instead — the webhook's transaction rolls back, the event is not stored,
        # and the provider delivers it again (Stripe retries a non-2xx for days), by then
        # onto a paid payout.
        raise Conflict(
            f"payout {payout.id} is still processing: its reversal is applied once it is paid",
            entity="payout",
            key=payout.id,
        )
    if payout.status is not PayoutStatus.PAID or reversed_total is None:
        log.warning(
            "%s reversal %s for payout %s (%s): nothing to undo",
            event.provider,
            event.event_id,
            payout.id,
            payout.status.value,
        )
        return False
    account = host_account(payout.host_id)
    net = int(await db.scalar(_NET_PAID, {"payout": payout.id, "account": account}) or 0)
    target = payout.amount_paise - min(reversed_total, payout.amount_paise)
    undo = net - target
    if undo <= 0:
        return False
    await post(
        db, payout_reversal_txn(payout_id=payout.id, host_id=payout.host_id, amount_paise=undo)
    )
    before_note = payout.note
    payout.note = (
        f"{event.provider} reversed {payout.amount_paise - target} of "
        f"{payout.amount_paise} paise ({event.payout_ref or event.event_id})"
    )[:500]
    await record(
        db,
        SYSTEM,
        action="payout.reversed",
        entity="payout",
        entity_id=payout.id,
        before={"net_paid_paise": net, "note": before_note},
        after={"net_paid_paise": target, "note": payout.note},
        data={"event_id": event.event_id, "undone_paise": undo},
    )
    return True


async def _record_outcome(db: AsyncSession, payout: Payout) -> None:
    """The provider's verdict on an executed payout, audited as the system's act."""
    await record(
        db,
        SYSTEM,
        action=f"payout.{payout.status.value}",
        entity="payout",
        entity_id=payout.id,
        before={"status": PayoutStatus.PROCESSING},
        after={"status": payout.status, "provider_ref": payout.provider_ref},
        data={"note": payout.note} if payout.note else None,
    )


async def _lock_payout(db: AsyncSession, payout_id: str) -> Payout:
    payout = await db.get(Payout, payout_id, with_for_update=True, populate_existing=True)
    if payout is None:
        raise NotFound("payout", payout_id)
    return payout


async def set_weekly(db: AsyncSession, host: Host, *, weekly: bool) -> Host:
    host.weekly_payouts = weekly
    await db.flush()
    return host


async def list_payouts(
    db: AsyncSession,
    *,
    host_id: str | None = None,
    status: PayoutStatus | None = None,
    limit: int = 100,
) -> list[Payout]:
    """Newest first; ``host_id`` scopes it to one host (the host routes always pass it)."""
    query = select(Payout).order_by(Payout.created_at.desc(), Payout.id.desc()).limit(limit)
    if host_id is not None:
        query = query.where(Payout.host_id == host_id)
    if status is not None:
        query = query.where(Payout.status == status)
    return list(await db.scalars(query))


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    status: PaymentStatus | None = None
    provider: str | None = None
    user_id: str | None = None
    booking_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 100


async def list_payments(db: AsyncSession, f: PaymentFilter) -> list[Payment]:
    """The admin's view of payments, newest first."""
    query = select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc()).limit(f.limit)
    if f.status is not None:
        query = query.where(Payment.status == f.status)
    if f.provider is not None:
        query = query.where(Payment.provider == f.provider)
    if f.user_id is not None:
        query = query.where(Payment.user_id == f.user_id)
    if f.booking_id is not None:
        query = query.where(Payment.booking_id == f.booking_id)
    if f.created_from is not None:
        query = query.where(Payment.created_at >= f.created_from)
    if f.created_to is not None:
        query = query.where(Payment.created_at < f.created_to)
    return list(await db.scalars(query))


@dataclass(slots=True)
class WeeklyRun:
    """What one run of the weekly job did: payout ids by outcome, hosts skipped."""

    paid: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: Sent, outcome unknown (a provider error): retried by the next run.
    processing: list[str] = field(default_factory=list)
    #: Hosts with nothing payable, or already paid out this week.
    skipped: int = 0


async def _weekly_payout(
    db: AsyncSession, host_id: str, *, now: datetime, hold: timedelta
) -> Payout | None:
    host = await _lock_host(db, host_id)
    week = rules.week_start(now)
    done = await db.scalar(
        select(Payout.id).where(
            Payout.host_id == host_id, Payout.automatic, Payout.period_end == week
        )
    )
    balance = await host_balance(db, host_id, now=now, hold=hold)
    if done is not None or balance.payable_paise <= 0:
        return None
    payout = Payout(
        host_id=host_id,
        amount_paise=balance.payable_paise,
        period_start=await _period_start(db, host, week),
        period_end=week,
        automatic=True,
        # Approved by the host's own standing instruction: no admin in the loop.
        status=PayoutStatus.PROCESSING,
        decided_at=now,
    )
    db.add(payout)
    await db.flush()
    await record(
        db,
        SYSTEM,
        action="payout.automatic",
        entity="payout",
        entity_id=payout.id,
        after={"status": payout.status, "amount_paise": payout.amount_paise, "host_id": host_id},
    )
    return payout


async def run_weekly(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    now: datetime,
    hold: timedelta,
    sealer: Sealer | None,
) -> WeeklyRun:
    """One run of the weekly job (idempotent within a week; a timer calls it)."""
    run = WeeklyRun()
    async with sessions() as db:
        hosts = list(
            await db.scalars(
                select(Host.id).where(Host.weekly_payouts, Host.kyc_status == KycStatus.VERIFIED)
            )
        )
        stuck = list(
            await db.scalars(select(Payout.id).where(Payout.status == PayoutStatus.PROCESSING))
        )
    todo = list(stuck)
    for host_id in hosts:
        async with sessions() as db, db.begin():
            payout = await _weekly_payout(db, host_id, now=now, hold=hold)
        if payout is None:
            run.skipped += 1
        else:
            todo.append(payout.id)
    for payout_id in todo:
        try:
            done = await execute(sessions, provider, payout_id=payout_id, sealer=sealer)
        except CloudError:
            # One host's failure (an unknown outcome, an account that cannot be opened) must
            # not stop the others' payouts: this one stays processing, retried next run.
            log.exception("payout %s: not paid this run, retried next run", payout_id)
            run.processing.append(payout_id)
            continue
        {PayoutStatus.PAID: run.paid, PayoutStatus.FAILED: run.failed}.get(
            done.status, run.processing
        ).append(payout_id)
    return run
