"""Verified webhooks stored and applied many at a time: one database transaction per batch.

:func:`apply_webhooks` is :func:`cloud.payments.service.record_webhook` for a list of events:
every event is stored once in ``provider_events`` and its state change applied in the *same*
database transaction, forward only, exactly as one at a time — but in a fixed number of
statements whatever the batch holds (store the events; lock their refunds, then their
payments; read the refunds already processed; write the payments, the refunds and every
ledger transaction). The decisions are made by :func:`plan`, pure, over the locked rows, in
the events' arrival order, so two events for one payment in one batch (a late
``payment.failed`` and ``payment.captured``) give what they give one after the other.

:class:`WebhookBatcher` is the group commit the webhook routes use: a delivery joins the
batch being gathered while the previous one commits, and is answered when its batch has
committed. 50 concurrent deliveries cost a few transactions instead of 50 (``bench.payments``
``webhook_p99_ms``; docs/decisions.md). A batch that fails is applied again one event per
transaction, so one bad event fails only its own delivery (answered 500: the provider
retries it), never its neighbours.

Locks, in this order (the single-event path's order, so neither deadlocks the other): the
events' refund rows, then their payment rows by id; the ledger inserts then take KEY SHARE
locks on the sessions, after every row lock, as a settler's bill step expects
(cloud/payments/settlement.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.ledger.entries import Txn, capture_txn, refund_txn
from cloud.ledger.service import post_all
from cloud.payments import transitions
from cloud.payments.models import PaymentStatus, RefundStatus
from cloud.payments.provider import EventKind, WebhookEvent
from cloud.payouts import service as payouts

log = logging.getLogger(__name__)

#: Payout webhooks (RazorpayX payouts, Stripe transfer reversals), settled by
#: cloud/payouts/service.py.
PAYOUT_EVENTS = frozenset(
    {EventKind.PAYOUT_PROCESSED, EventKind.PAYOUT_FAILED, EventKind.PAYOUT_REVERSED}
)

#: Events applied in one database transaction at most.
BATCH_MAX = 200


class WebhookOutcome(StrEnum):
    APPLIED = "applied"  # stored, and it moved a payment or refund forward
    STALE = "stale"  # stored; late or repeated news, nothing moved
    DUPLICATE = "duplicate"  # this event id was seen before: nothing at all
    UNMATCHED = "unmatched"  # stored; names no payment or refund of ours
    IGNORED = "ignored"  # stored; a kind of event we do not act on


Outcome = WebhookOutcome


@dataclass(slots=True)
class PaymentRow:
    """The columns of a locked ``payments`` row a webhook may read or move."""

    id: str
    provider: str
    user_id: str
    session_id: int | None
    status: PaymentStatus
    amount_paise: int
    captured_paise: int
    provider_order_id: str | None
    provider_payment_id: str | None
    #: Of its refunds, the amount already ``processed`` (read under the lock).
    refunded_paise: int = 0
    changed: bool = False


@dataclass(slots=True)
class RefundRow:
    id: str
    payment_id: str
    amount_paise: int
    status: RefundStatus
    provider_refund_id: str | None
    changed: bool = False


@dataclass(slots=True)
class Plan:
    """What a batch does: an outcome per event, the rows it moves, the ledger it posts."""

    outcomes: list[WebhookOutcome] = field(default_factory=list)
    txns: list[Txn] = field(default_factory=list)


def _find_payment(
    event: WebhookEvent, by_order: dict[str, PaymentRow], by_ref: dict[str, PaymentRow]
) -> PaymentRow | None:
    # Either the order or the payment id names it (the query's OR), at this provider.
    found = (event.order_ref and by_order.get(event.order_ref)) or (
        event.payment_ref and by_ref.get(event.payment_ref)
    )
    return found if found and found.provider == event.provider else None


def _move(payment: PaymentRow, target: PaymentStatus, event: WebhookEvent) -> Txn | bool | None:
    """Move ``payment`` forward to ``target``: False when the news is late or repeated; the
    capture's ledger transaction when it becomes captured; else True."""
    new = transitions.advance(payment.status, target)
    if new is None:
        return False
    if event.payment_ref and (
        payment.provider_payment_id is None or new is not PaymentStatus.FAILED
    ):
        # The attempt that succeeds is the order's payment (a failed attempt may come first).
        payment.provider_payment_id = event.payment_ref
    payment.status = new
    payment.changed = True
    if new is not PaymentStatus.CAPTURED:
        return True
    payment.captured_paise = event.amount_paise or payment.amount_paise
    # Posted with the one transition to captured (the row is locked): booked once.
    return capture_txn(
        payment_id=payment.id,
        driver_id=payment.user_id,
        amount_paise=payment.captured_paise,
        session_id=payment.session_id,
    )


def _refund_event(
    refund: RefundRow, payment: PaymentRow, event: WebhookEvent, plan: Plan
) -> WebhookOutcome:
    if refund.provider_refund_id is None and event.refund_ref:
        refund.provider_refund_id = event.refund_ref
        refund.changed = True
    target = (
        RefundStatus.PROCESSED if event.kind is EventKind.REFUND_PROCESSED else RefundStatus.FAILED
    )
    new = transitions.advance_refund(refund.status, target)
    if new is None:
        return Outcome.STALE
    refund.status = new
    refund.changed = True
    if new is RefundStatus.PROCESSED:
        payment.refunded_paise += refund.amount_paise
        status = transitions.after_refunds(payment.captured_paise, payment.refunded_paise)
        if transitions.advance(payment.status, status) is not None:
            payment.status = status
            payment.changed = True
        # The money went back: the ledger says so once, with this transition.
        plan.txns.append(
            refund_txn(
                payment_id=payment.id,
                driver_id=payment.user_id,
                amount_paise=refund.amount_paise,
                session_id=payment.session_id,
                refund_id=refund.id,
            )
        )
    return Outcome.APPLIED


def plan(
    events: list[WebhookEvent],
    stored: list[bool],
    payments: list[PaymentRow],
    refunds: list[RefundRow],
) -> Plan:
    """Apply ``events`` in order to the locked rows (pure): ``stored[i]`` is False for an
    event already seen (a duplicate). Mutates the rows; returns the outcomes and ledger."""
    by_id = {p.id: p for p in payments}
    by_order = {p.provider_order_id: p for p in payments if p.provider_order_id}
    by_ref = {p.provider_payment_id: p for p in payments if p.provider_payment_id}
    refund_by_ref = {r.provider_refund_id: r for r in refunds if r.provider_refund_id}
    refund_by_id = {r.id: r for r in refunds}
    result = Plan()
    for event, new in zip(events, stored, strict=True):
        if not new:
            result.outcomes.append(Outcome.DUPLICATE)
        elif event.kind is EventKind.IGNORED:
            result.outcomes.append(Outcome.IGNORED)
        elif event.kind in PAYOUT_EVENTS:
            # Payout rows are not planned here: apply_webhooks settles them afterwards
            # (cloud.payouts.service.apply_payout_event) and replaces this outcome.
            result.outcomes.append(Outcome.UNMATCHED)
        elif event.kind in {EventKind.REFUND_PROCESSED, EventKind.REFUND_FAILED}:
            refund = (event.refund_ref and refund_by_ref.get(event.refund_ref)) or (
                event.refund_receipt and refund_by_id.get(event.refund_receipt)
            )
            if not refund:
                result.outcomes.append(Outcome.UNMATCHED)
                continue
            result.outcomes.append(_refund_event(refund, by_id[refund.payment_id], event, result))
            if refund.provider_refund_id:  # a later event of the batch may name it so
                refund_by_ref[refund.provider_refund_id] = refund
        else:
            target = transitions.payment_target(event.kind)
            assert target is not None
            payment = _find_payment(event, by_order, by_ref)
            if payment is None:
                log.warning(
                    "%s webhook %s (%s) names no payment of ours",
                    event.provider,
                    event.event_id,
                    event.event_type,
                )
                result.outcomes.append(Outcome.UNMATCHED)
                continue
            moved = _move(payment, target, event)
            if isinstance(moved, Txn):
                result.txns.append(moved)
            result.outcomes.append(Outcome.APPLIED if moved else Outcome.STALE)
            if payment.provider_payment_id:
                by_ref[payment.provider_payment_id] = payment
    return result


# --- the statements ---------------------------------------------------------------------------

_STORE = text(
    """
INSERT INTO provider_events (provider, event_id, event_type, payload)
SELECT p, e, t, j::jsonb FROM unnest(CAST(:provider AS text[]), CAST(:event_id AS text[]),
                                     CAST(:event_type AS text[]), CAST(:payload AS text[]))
  WITH ORDINALITY AS u(p, e, t, j, n)
ORDER BY n
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING provider, event_id"""
)

_REFUNDS = text(
    """
SELECT id, payment_id, amount_paise, status, provider_refund_id FROM refunds
WHERE provider_refund_id = ANY(CAST(:refs AS text[])) OR id = ANY(CAST(:ids AS text[]))
ORDER BY id FOR UPDATE"""
)

_PAYMENTS = text(
    """
SELECT p.id, p.provider, p.user_id, p.session_id, p.status, p.amount_paise, p.captured_paise,
       p.provider_order_id, p.provider_payment_id
FROM payments p
WHERE p.id = ANY(CAST(:ids AS text[]))
   OR (p.provider = ANY(CAST(:providers AS text[]))
       AND (p.provider_order_id = ANY(CAST(:orders AS text[]))
            OR p.provider_payment_id = ANY(CAST(:refs AS text[]))))
ORDER BY p.id FOR UPDATE"""
)

_PROCESSED = text(
    """
SELECT payment_id, sum(amount_paise) AS refunded FROM refunds
WHERE payment_id = ANY(CAST(:ids AS text[])) AND status = 'processed' GROUP BY payment_id"""
)

_WRITE_PAYMENTS = text(
    """
UPDATE payments p SET status = u.status, captured_paise = u.captured,
                      provider_payment_id = u.ref, updated_at = now()
FROM unnest(CAST(:ids AS text[]), CAST(:status AS text[]), CAST(:captured AS bigint[]),
            CAST(:refs AS text[])) AS u(id, status, captured, ref)
WHERE p.id = u.id"""
)

_WRITE_REFUNDS = text(
    """
UPDATE refunds r SET status = u.status, provider_refund_id = u.ref, updated_at = now()
FROM unnest(CAST(:ids AS text[]), CAST(:status AS text[]), CAST(:refs AS text[]))
  AS u(id, status, ref)
WHERE r.id = u.id"""
)


async def apply_webhooks(db: AsyncSession, events: list[WebhookEvent]) -> list[WebhookOutcome]:
    """Store ``events`` once each and apply them, in the caller's transaction; an outcome
    (:class:`Outcome`) per event, in order."""
    if not events:
        return []
    # The same event twice in one batch: the first is applied, the second is a duplicate.
    first: dict[tuple[str, str], int] = {}
    for i, e in enumerate(events):
        first.setdefault((e.provider, e.event_id), i)
    # Inserted in key order, (provider, event_id): each insert holds its key until the commit,
    # so two batches holding the same events in different orders would each wait for the
    # other's next key (a deadlock) — in one order, the later batch waits at its first
    # shared key while holding none of the other's.
    unique = [events[first[key]] for key in sorted(first)]
    rows = await db.execute(
        _STORE,
        {
            "provider": [e.provider for e in unique],
            "event_id": [e.event_id for e in unique],
            "event_type": [e.event_type[:64] for e in unique],
            "payload": [json.dumps(e.payload) for e in unique],
        },
    )
    # A concurrent delivery of an event waited on its key until that one committed, then
    # did nothing: it is a duplicate, as is an event seen before.
    new_keys = {(r.provider, r.event_id) for r in rows}
    stored = [
        first[(e.provider, e.event_id)] == i and (e.provider, e.event_id) in new_keys
        for i, e in enumerate(events)
    ]
    live = [e for e, s in zip(events, stored, strict=True) if s]
    refund_events = [
        e for e in live if e.kind in {EventKind.REFUND_PROCESSED, EventKind.REFUND_FAILED}
    ]
    refunds: list[RefundRow] = []
    if refund_events:
        found = await db.execute(
            _REFUNDS,
            {
                "refs": [e.refund_ref for e in refund_events if e.refund_ref],
                "ids": [e.refund_receipt for e in refund_events if e.refund_receipt],
            },
        )
        refunds = [
            RefundRow(
                r.id,
                r.payment_id,
                int(r.amount_paise),
                RefundStatus(r.status),
                r.provider_refund_id,
            )
            for r in found
        ]
    payment_events = [e for e in live if transitions.payment_target(e.kind) is not None]
    payments: list[PaymentRow] = []
    if payment_events or refunds:
        found = await db.execute(
            _PAYMENTS,
            {
                "ids": sorted({r.payment_id for r in refunds}),
                "providers": sorted({e.provider for e in payment_events}),
                "orders": [e.order_ref for e in payment_events if e.order_ref],
                "refs": [e.payment_ref for e in payment_events if e.payment_ref],
            },
        )
        payments = [
            PaymentRow(
                r.id,
                r.provider,
                r.user_id,
                r.session_id,
                PaymentStatus(r.status),
                int(r.amount_paise),
                int(r.captured_paise),
                r.provider_order_id,
                r.provider_payment_id,
            )
            for r in found
        ]
    if refunds:
        processed = await db.execute(_PROCESSED, {"ids": sorted({r.payment_id for r in refunds})})
        sums: dict[str, int] = {r.payment_id: int(r.refunded) for r in processed}
        for p in payments:
            p.refunded_paise = sums.get(p.id, 0)
    result = plan(events, stored, payments, refunds)
    moved_refunds = [r for r in refunds if r.changed]
    if moved_refunds:
        await db.execute(
            _WRITE_REFUNDS,
            {
                "ids": [r.id for r in moved_refunds],
                "status": [r.status.value for r in moved_refunds],
                "refs": [r.provider_refund_id for r in moved_refunds],
            },
        )
    moved = [p for p in payments if p.changed]
    if moved:
        await db.execute(
            _WRITE_PAYMENTS,
            {
                "ids": [p.id for p in moved],
                "status": [p.status.value for p in moved],
                "captured": [p.captured_paise for p in moved],
                "refs": [p.provider_payment_id for p in moved],
            },
        )
    # Payouts after the payment rows (their locks: host, then payout, as approve() takes
    # them); the debit of a payout paid here is posted by the payout's own move to paid.
    for i, (event, new) in enumerate(zip(events, stored, strict=True)):
        if new and event.kind in PAYOUT_EVENTS:
            moved_payout = await payouts.apply_payout_event(db, event)
            result.outcomes[i] = (
                Outcome.UNMATCHED
                if moved_payout is None
                else Outcome.APPLIED
                if moved_payout
                else Outcome.STALE
            )
    await post_all(db, result.txns)
    return result.outcomes


@dataclass(slots=True)
class _Pending:
    event: WebhookEvent
    answer: asyncio.Future[WebhookOutcome]


class WebhookBatcher:
    """Group commit for webhook deliveries: :meth:`apply` waits for its event's batch to
    commit and returns its outcome (or raises what applying it alone raised). Up to
    ``in_flight`` batches run at once, so the first delivery of a burst, alone in its batch,
    does not hold back the rest behind its commit.

    Its batches are its own tasks, so it is entered as a context (the API's lifespan, on its
    exit stack after the engine): leaving it cancels them and waits for them, before the
    engine they write through is disposed; afterwards :meth:`apply` refuses."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, in_flight: int = 2) -> None:
        self._sessions = sessions
        self._queue: list[_Pending] = []
        self._in_flight = in_flight
        self._drainers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        drainers = set(self._drainers)
        for task in drainers:
            task.cancel()
        if drainers:
            # wait() does not raise the batches' CancelledError into this task.
            await asyncio.wait(drainers)

    async def apply(self, event: WebhookEvent) -> WebhookOutcome:
        if self._closed:
            raise RuntimeError("webhook batcher stopped")
        pending = _Pending(event, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if len(self._drainers) < self._in_flight:
            task = asyncio.create_task(self._drain(), name="webhook-batch")
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await pending.answer

    async def _drain(self) -> None:
        # Batch after batch while deliveries wait: those arriving meanwhile form the next.
        while self._queue:
            batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
            try:
                async with self._sessions() as db, db.begin():
                    outcomes = await apply_webhooks(db, [p.event for p in batch])
            except Exception:  # noqa: BLE001 -- each event alone, so one fails only itself
                log.warning("a webhook batch of %s failed; applying them one by one", len(batch))
                try:
                    await asyncio.gather(*(self._alone(p) for p in batch))
                except BaseException:
                    self._stopped(batch)
                    raise
                continue
            except BaseException:
                self._stopped(batch)
                raise
            for p, outcome in zip(batch, outcomes, strict=True):
                if not p.answer.done():
                    p.answer.set_result(outcome)

    def _stopped(self, batch: list[_Pending]) -> None:
        # Cancelled (the API stopping): nobody waits forever for a batch never done.
        for p in batch + self._queue:
            if not p.answer.done():
                p.answer.set_exception(RuntimeError("webhook batcher stopped"))

    async def _alone(self, pending: _Pending) -> None:
        try:
            async with self._sessions() as db, db.begin():
                (outcome,) = await apply_webhooks(db, [pending.event])
        except Exception as exc:  # noqa: BLE001 -- handed to the delivery that caused it
            if not pending.answer.done():
                pending.answer.set_exception(exc)
            return
        if not pending.answer.done():
            pending.answer.set_result(outcome)
