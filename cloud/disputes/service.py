"""Disputes in the database, around :mod:`cloud.disputes.rules`.

**Who sees a dispute.** The driver who opened it, the host of the session's charger, admins;
anyone else gets 404, as if it did not exist. Only the driver opens one and adds photos, only
the host responds, only an admin resolves.

**While it is open** (or under review) the session's earnings are held out of the host's
payable balance (:func:`cloud.ledger.service.host_balance` reads this table), so a payout
requested meanwhile cannot take them.

**Resolving with a refund** (:func:`resolve`), in two steps like the billing flow:

1. one transaction, the dispute, the session (FOR NO KEY UPDATE, as the settle job takes
   it) and the session's payments locked: the amount is checked against what the payments
   have left to refund, the dispute adjustment is posted to the ledger (the host's earning
   from the session, the platform's commission for the rest: :func:`cloud.disputes.rules.
   charge`), one ``refunds`` row per payment is written (reason ``dispute <id>``) with a GST
   credit note for it against the session's invoice (:func:`cloud.invoices.service.
   issue_credit_note`: the credit-note series, GST reversed on the refunded taxable value);
   the adjustment is the notes' taxable value (from the host, the platform for the rest)
   and their GST (:func:`cloud.ledger.entries.dispute_gst_txn`: from ``gst_payable``, or
   the GST-registered host who supplied it); the dispute becomes ``resolved_refund`` —
   together or not at all;
2. no transaction open: each refund row is sent to the provider
   (:func:`cloud.payments.service.refund_payment`, keyed on the refund row's id). Its
   webhook (or answer) marks it processed and posts the refund to the ledger, returning the
   money the adjustment credited to the driver.

A crash or a provider failure between the steps leaves the dispute resolved with a refund
row not yet sent; resolving it again sends what is missing and changes nothing else.
A rejection moves no money: the dispute is closed and the hold ends. Every resolution writes
an audit row (``dispute.resolve``: who, the outcome, before and after) in step 1's
transaction, and every step (opened, answered, resolved) queues a notification for the
other side in its transaction (:func:`cloud.notifications.events.dispute_updated`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.audit.service import Actor, record
from cloud.chargers.models import Charger
from cloud.chargers.photos import check_photo
from cloud.chargers.storage import PhotoStorage, new_storage_key
from cloud.columns import ulid_pk
from cloud.disputes import rules
from cloud.disputes.models import (
    ChargedTo,
    Dispute,
    DisputePhoto,
    DisputeReason,
    DisputeStatus,
)
from cloud.errors import Conflict, Forbidden, InvalidRequest, NotFound
from cloud.invoices.service import issue_credit_note
from cloud.ledger.accounts import host_account
from cloud.ledger.entries import dispute_refund_txn
from cloud.ledger.service import post
from cloud.notifications.events import dispute_updated
from cloud.payments.models import LedgerEntry, Payment, PaymentStatus, Refund, RefundStatus
from cloud.payments.provider import PaymentProvider
from cloud.payments.service import refund_payment
from cloud.reviews.rules import completed, within
from cloud.sessions.models import BillingState, ChargingSession
from cloud.settings import BillingSettings

_NO_KEY_UPDATE = {"key_share": True}
#: Payments whose captured money a dispute can give back.
_REFUNDABLE = (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED)


def refund_reason(dispute_id: str) -> str:
    """The refunds' reason: one refund per (payment, reason), so a retry refunds once."""
    return f"dispute {dispute_id}"


async def open_dispute(
    db: AsyncSession,
    principal: Principal,
    session_id: str,
    *,
    reason: DisputeReason,
    description: str,
    now: datetime,
) -> Dispute:
    """The driver's dispute on a completed session of theirs, within 14 days of its stop:
    403 for any other session, 409 for a second dispute on it."""
    row = await db.scalar(
        select(ChargingSession).where(
            ChargingSession.device_session_id == session_id,
            ChargingSession.user_id == principal.user_id,
        )
    )
    if (
        row is None
        or row.charger_id is None
        or not completed(row.state, row.billing_state)
        or not within(row.stopped_at, now, rules.DISPUTE_WINDOW)
    ):
        raise Forbidden(
            f"no completed session {session_id!r} of yours within the last "
            f"{rules.DISPUTE_WINDOW.days} days"
        )
    dispute_id = await db.scalar(
        insert(Dispute)
        .values(
            id=ulid_pk(),
            session_id=row.id,
            raised_by=principal.user_id,
            reason_code=reason,
            description=description,
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
        .returning(Dispute.id)
    )
    if dispute_id is None:
        raise Conflict(
            f"session {session_id!r} has a dispute already", entity="dispute", key=session_id
        )
    found = await db.get(Dispute, dispute_id)
    assert found is not None
    await _tell(
        db,
        found,
        "opened",
        "opened",
        driver=False,
        host=True,
        note=f"Reason: {reason.value.replace('_', ' ')}.",
    )
    return found


def _scoped(principal: Principal) -> Select[tuple[Dispute]]:
    """Disputes the caller may see: raised by them, or on their chargers (admins: all)."""
    query = (
        select(Dispute)
        .join(ChargingSession, ChargingSession.id == Dispute.session_id)
        .join(Charger, Charger.id == ChargingSession.charger_id)
        .join(Host, Host.id == Charger.host_id)
    )
    if principal.has(Role.ADMIN):
        return query
    mine: ColumnElement[bool] = or_(
        Dispute.raised_by == principal.user_id, Host.user_id == principal.user_id
    )
    return query.where(mine)


async def get_dispute(
    db: AsyncSession, principal: Principal, dispute_id: str, *, lock: bool = False
) -> Dispute:
    query = _scoped(principal).where(Dispute.id == dispute_id)
    if lock:
        query = query.with_for_update(of=Dispute)
    dispute = await db.scalar(query)
    if dispute is None:
        raise NotFound("dispute", dispute_id)
    return dispute


async def list_disputes(
    db: AsyncSession,
    principal: Principal,
    *,
    status: DisputeStatus | None,
    limit: int,
    offset: int = 0,
    everyone: bool = False,
) -> list[Dispute]:
    """Newest first: the caller's (raised, or on their chargers); an admin's queue with
    ``everyone`` (oldest first there: the queue is worked from its head)."""
    query = _scoped(principal) if not everyone else select(Dispute)
    if status is not None:
        query = query.where(Dispute.status == status)
    order = (
        (Dispute.created_at, Dispute.id)
        if everyone
        else (Dispute.created_at.desc(), Dispute.id.desc())
    )
    return list(await db.scalars(query.order_by(*order).limit(limit).offset(offset)))


async def session_public_id(db: AsyncSession, dispute: Dispute) -> str:
    public = await db.scalar(
        select(ChargingSession.device_session_id).where(ChargingSession.id == dispute.session_id)
    )
    assert public is not None
    return public


async def host_user_of(db: AsyncSession, dispute: Dispute) -> str:
    user_id = await db.scalar(
        select(Host.user_id)
        .join(Charger, Charger.host_id == Host.id)
        .join(ChargingSession, ChargingSession.charger_id == Charger.id)
        .where(ChargingSession.id == dispute.session_id)
    )
    assert user_id is not None
    return user_id


async def _parties(db: AsyncSession, dispute: Dispute) -> tuple[str, str]:
    """The charger's name and its host's user id."""
    row = (
        await db.execute(
            select(Charger.name, Host.user_id)
            .join(Host, Host.id == Charger.host_id)
            .join(ChargingSession, ChargingSession.charger_id == Charger.id)
            .where(ChargingSession.id == dispute.session_id)
        )
    ).one()
    return str(row[0]), str(row[1])


async def _tell(
    db: AsyncSession,
    dispute: Dispute,
    step: str,
    label: str,
    *,
    driver: bool,
    host: bool,
    note: str = "",
) -> None:
    """Queue the dispute's news for its driver and/or host in the change's transaction
    (cloud.notifications.events: sent later, by the delivery job, with retries)."""
    charger_name, host_user = await _parties(db, dispute)
    for user_id, wanted in ((dispute.raised_by, driver), (host_user, host)):
        if wanted:
            await dispute_updated(
                db,
                dispute_id=dispute.id,
                user_id=user_id,
                status_label=label,
                charger_name=charger_name,
                note=note,
                refund_paise=dispute.refund_paise,
                dedupe_key=f"dispute_{step}:{dispute.id}:{user_id}",
            )


async def respond(
    db: AsyncSession, principal: Principal, dispute_id: str, *, text: str, now: datetime
) -> Dispute:
    """The host's one response, while the dispute is open: it moves to ``under_review``."""
    dispute = await get_dispute(db, principal, dispute_id, lock=True)
    if await host_user_of(db, dispute) != principal.user_id:
        # The driver (or an admin) sees it but is not the host who answers for it.
        raise Forbidden("only the charger's host responds to a dispute")
    if dispute.status is not DisputeStatus.OPEN or dispute.host_response is not None:
        raise Conflict(
            f"dispute {dispute_id!r} is {dispute.status.value}: no response now",
            entity="dispute",
            key=dispute_id,
        )
    dispute.host_response = text
    dispute.host_responded_at = now
    dispute.status = DisputeStatus.UNDER_REVIEW
    await db.flush()
    await _tell(
        db,
        dispute,
        "answered",
        "under review",
        driver=True,
        host=False,
        note="The host has responded.",
    )
    return dispute


async def add_photo(
    db: AsyncSession,
    storage: PhotoStorage,
    principal: Principal,
    dispute_id: str,
    data: bytes,
    *,
    max_bytes: int,
) -> DisputePhoto:
    """A photo for the driver's unresolved dispute (bytes first, then the row)."""
    dispute = await get_dispute(db, principal, dispute_id, lock=True)
    if dispute.raised_by != principal.user_id:
        raise Forbidden("only the driver who opened a dispute adds photos to it")
    if dispute.status not in rules.UNRESOLVED:
        raise Conflict(f"dispute {dispute_id!r} is resolved", entity="dispute", key=dispute_id)
    kind = check_photo(data, max_bytes)
    count = await db.scalar(
        select(func.count()).select_from(DisputePhoto).where(DisputePhoto.dispute_id == dispute.id)
    )
    if (count or 0) >= rules.MAX_PHOTOS:
        raise InvalidRequest(f"a dispute has at most {rules.MAX_PHOTOS} photos", field="photo")
    key = new_storage_key(kind.extension)
    await storage.put(key, data)
    photo = DisputePhoto(
        dispute_id=dispute.id,
        storage_key=key,
        content_type=kind.content_type,
        size_bytes=len(data),
    )
    db.add(photo)
    await db.flush()
    return photo


async def photos_of(db: AsyncSession, dispute_id: str) -> list[DisputePhoto]:
    return list(
        await db.scalars(
            select(DisputePhoto)
            .where(DisputePhoto.dispute_id == dispute_id)
            .order_by(DisputePhoto.created_at, DisputePhoto.id)
        )
    )


async def find_photo(
    db: AsyncSession, principal: Principal, dispute_id: str, photo_id: str
) -> DisputePhoto:
    dispute = await get_dispute(db, principal, dispute_id)
    photo = await db.scalar(
        select(DisputePhoto).where(
            DisputePhoto.id == photo_id, DisputePhoto.dispute_id == dispute.id
        )
    )
    if photo is None:
        raise NotFound("photo", photo_id)
    return photo


# --- resolution -----------------------------------------------------------------------------


async def _refundable(
    db: AsyncSession, session_pk: int, *, lock: bool = True
) -> list[tuple[str, int]]:
    """The session's payments (locked, oldest first) and what each has left to refund:
    captured less every refund not failed (pending ones too: their money is spoken for)."""
    query = (
        select(Payment)
        .where(Payment.session_id == session_pk, Payment.status.in_(_REFUNDABLE))
        .order_by(Payment.created_at, Payment.id)
    )
    payments = list(await db.scalars(query.with_for_update() if lock else query))
    left: list[tuple[str, int]] = []
    for payment in payments:
        refunded = await db.scalar(
            select(func.coalesce(func.sum(Refund.amount_paise), 0)).where(
                Refund.payment_id == payment.id, Refund.status != RefundStatus.FAILED
            )
        )
        left.append((payment.id, payment.captured_paise - int(refunded or 0)))
    return left


async def left_to_refund(db: AsyncSession, dispute: Dispute) -> int:
    """What the disputed session's payments have left to refund (the most a partial refund
    may be), read without locks: for the admin's page; resolving checks it again, locked."""
    return sum(left for _, left in await _refundable(db, dispute.session_id, lock=False))


async def _host_earned(db: AsyncSession, host_id: str, session_pk: int) -> int:
    """What the session left in the host's account (its bill's credits less adjustments)."""
    total = await db.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_paise), 0)).where(
            LedgerEntry.account == host_account(host_id), LedgerEntry.session_id == session_pk
        )
    )
    return -int(total or 0)


async def _decide(
    db: AsyncSession,
    actor: Actor,
    dispute_id: str,
    *,
    outcome: rules.Outcome,
    refund_paise: int | None,
    charged_to: ChargedTo,
    note: str,
    now: datetime,
    billing: BillingSettings,
) -> Dispute:
    """Step 1 (module docstring), in the caller's transaction."""
    # populate_existing: the caller may have loaded the dispute before this lock; without it
    # the session would hand back that copy, stale if another resolution committed meanwhile.
    dispute = await db.get(Dispute, dispute_id, with_for_update=True, populate_existing=True)
    if dispute is None:
        raise NotFound("dispute", dispute_id)
    if dispute.status not in rules.UNRESOLVED:
        raise Conflict(
            f"dispute {dispute_id!r} is {dispute.status.value}", entity="dispute", key=dispute_id
        )
    session = await db.get(ChargingSession, dispute.session_id, with_for_update=_NO_KEY_UPDATE)
    assert session is not None
    assert session.charger_id is not None
    if outcome is not rules.Outcome.REJECTED and session.billing_state is not BillingState.SETTLED:
        raise Conflict(
            f"the session of dispute {dispute_id!r} is not settled yet: nothing to refund",
            entity="dispute",
            key=dispute_id,
        )
    left = await _refundable(db, session.id) if outcome is not rules.Outcome.REJECTED else []
    amount = rules.refund_amount(outcome, refund_paise, sum(a for _, a in left), dispute_id)
    before = {"status": dispute.status}
    dispute.resolution = note
    dispute.resolved_by = actor.user_id
    dispute.resolved_at = now
    if amount == 0:
        dispute.status = DisputeStatus.RESOLVED_NO_ACTION
        await _audit(db, actor, dispute, before, outcome)
        await db.flush()
        await _tell(
            db, dispute, "resolved", "closed without a refund", driver=True, host=True, note=note
        )
        return dispute
    charger = await db.get(Charger, session.charger_id)
    assert charger is not None
    assert session.user_id is not None
    memo = f"dispute {dispute.id}"
    refunds = [
        Refund(payment_id=payment_id, amount_paise=paise, reason=refund_reason(dispute.id))
        for payment_id, paise in rules.allocate(amount, left)
    ]
    db.add_all(refunds)
    await db.flush()
    # The supply's value is reduced by the refund: a GST credit note per refund against the
    # session's invoice (its own series; taxable value and GST reversed in the invoice's
    # proportion: cloud/invoices/document.py credit_amounts), keyed on the refund so a
    # retried resolution issues none twice.
    notes = [
        await issue_credit_note(
            db,
            session.id,
            amount_paise=refund.amount_paise,
            reason=memo,
            refund_id=refund.id,
            now=now,
        )
        for refund in refunds
    ]
    # The notes' GST comes back from whoever owes it (the supplier of the invoice: the
    # GST-registered host, else the platform); the taxable part is the adjustment charged to
    # the host (up to what the session left them beside that GST) or the platform.
    gst = sum(n.cgst_paise + n.sgst_paise + n.igst_paise for n in notes)
    # The invoice's supplier of record is the host when it is not the platform (a host with a
    # GSTIN at the time of the bill: cloud/invoices/supply.py supplier_for). The platform's
    # GSTIN is the API's own settings' (as settlement issues invoices with), not the process
    # environment read now.
    platform_gstin = billing.supplier_gstin
    host_supplies = any(n.supplier_gstin != platform_gstin for n in notes)
    earned = await _host_earned(db, charger.host_id, session.id)
    split = rules.charge(
        amount - gst, max(0, earned - gst) if host_supplies else earned, charged_to
    )
    await post(
        db,
        dispute_refund_txn(
            session_id=session.id,
            driver_id=session.user_id,
            host_id=charger.host_id,
            host_paise=split.host_paise,
            platform_paise=split.platform_paise,
            gst_paise=gst,
            gst_from_host=host_supplies,
            memo=memo,
        ),
    )
    dispute.status = DisputeStatus.RESOLVED_REFUND
    dispute.refund_paise = amount
    dispute.charged_to = charged_to
    await _audit(
        db,
        actor,
        dispute,
        before,
        outcome,
        host_paise=split.host_paise,
        platform_paise=split.platform_paise,
        gst_paise=gst,
    )
    await db.flush()
    await _tell(
        db, dispute, "resolved", "resolved with a refund", driver=True, host=True, note=note
    )
    return dispute


async def _audit(
    db: AsyncSession,
    actor: Actor,
    dispute: Dispute,
    before: Mapping[str, object],
    outcome: rules.Outcome,
    *,
    host_paise: int = 0,
    platform_paise: int = 0,
    gst_paise: int = 0,
) -> None:
    await record(
        db,
        actor,
        action="dispute.resolve",
        entity="dispute",
        entity_id=dispute.id,
        before=before,
        after={
            "status": dispute.status,
            "refund_paise": dispute.refund_paise,
            "charged_to": dispute.charged_to,
        },
        data={
            "outcome": outcome,
            "note": dispute.resolution,
            "host_paise": host_paise,
            "platform_paise": platform_paise,
            "gst_paise": gst_paise,
        },
    )


async def resolve(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    actor: Actor,
    dispute_id: str,
    *,
    outcome: rules.Outcome,
    refund_paise: int | None,
    charged_to: ChargedTo,
    note: str,
    now: datetime,
    billing: BillingSettings,
) -> Dispute:
    """Resolve a dispute (module docstring); for one already resolved with a refund, send
    the refunds not yet sent (a retry after a failure) and answer it as it is."""
    async with sessions() as db, db.begin():
        # Locked on this first read: a second resolution at the same moment waits here and
        # then sees the first one's outcome (a retry of sending, or a Conflict).
        dispute = await db.get(Dispute, dispute_id, with_for_update=True)
        if dispute is None:
            raise NotFound("dispute", dispute_id)
        if dispute.status in rules.UNRESOLVED:
            dispute = await _decide(
                db,
                actor,
                dispute_id,
                outcome=outcome,
                refund_paise=refund_paise,
                charged_to=charged_to,
                note=note,
                now=now,
                billing=billing,
            )
        elif dispute.status is not DisputeStatus.RESOLVED_REFUND:
            raise Conflict(
                f"dispute {dispute_id!r} is {dispute.status.value}",
                entity="dispute",
                key=dispute_id,
            )
    await send_refunds(sessions, provider, dispute_id)
    return dispute


async def send_refunds(
    sessions: async_sessionmaker[AsyncSession], provider: PaymentProvider, dispute_id: str
) -> list[Refund]:
    """Send each refund of the dispute the provider has not acknowledged (idempotent)."""
    async with sessions() as db:
        unsent = list(
            await db.scalars(
                select(Refund).where(
                    Refund.reason == refund_reason(dispute_id),
                    Refund.provider_refund_id.is_(None),
                    Refund.status == RefundStatus.PENDING,
                )
            )
        )
    return [
        await refund_payment(
            sessions,
            provider,
            payment_id=r.payment_id,
            amount_paise=r.amount_paise,
            reason=r.reason,
        )
        for r in unsent
    ]
