"""Issuing, numbering and reading invoices and credit notes.

**The contract of** :func:`issue_invoice` (called by the billing flow right after it posts a
session's bill, in the same database transaction or after it):

* the session must be billed: its ``bill`` entries are in the ledger (``ledger_entries``
  with ``source = 'bill'``); the driver debited there is the recipient, the amount debited
  the invoice's total. A session without a bill is :class:`NotBilled` (a bill of 0 paise
  writes no entries: a free session gets no invoice, do not call it for one);
* ``quote``: the :class:`~cloud.billing.quote.Quote` the bill was priced with. Without it the
  session is priced again by the one rule, from the charger's tariff and the session's meter
  and times (no idle fee); either way its total must equal the ledger's bill, or
  :class:`BillMismatch` (the invoice never states another amount than the one charged);
* idempotent per session: a second call returns the first invoice (the session row is
  locked ``FOR UPDATE`` first, so two concurrent calls issue one);
* it numbers the invoice in the supplier's series for the financial year of ``now`` by
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on ``invoice_counters`` in the caller's
  transaction: the counter row stays locked until that transaction ends, and a rollback
  returns the number with the invoice — the series has no gaps (a sequence would have them);
* it does not commit: the caller's transaction does.

:func:`issue_credit_note` does the same for a refund after invoicing (its own series).
:func:`interstate` tells the billing flow which GST split to price a session with.

**Who may read one** (:func:`get_invoice`, :func:`list_invoices`): its recipient (the
driver), the host of the charger (whether or not they are its supplier of record), an admin.
Anyone else gets 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, Role, User
from cloud.accounts.tokens import Principal
from cloud.billing.quote import GST_RATE_BP, Quote, Rates, Tariff, price, session_usage
from cloud.bookings.models import Booking
from cloud.chargers.models import Charger
from cloud.db_errors import refusals
from cloud.errors import Conflict, DatabaseRefused, NotFound
from cloud.invoices import document
from cloud.invoices.document import Amounts, Series
from cloud.invoices.gstin import validate_gstin
from cloud.invoices.models import DocumentKind, Invoice
from cloud.invoices.supply import Supplier, is_interstate, place_of_supply, supplier_for
from cloud.ledger.accounts import EntrySource
from cloud.payments.models import LedgerEntry
from cloud.sessions.models import ChargingSession
from cloud.settings import BillingSettings, load_settings

__all__ = [
    "BillMismatch",
    "CreditExceedsInvoice",
    "FeeNotBilled",
    "NotBilled",
    "NotInvoiced",
    "charger_interstate",
    "get_invoice",
    "interstate",
    "issue_credit_note",
    "issue_fee_invoice",
    "issue_invoice",
    "issue_invoices",
    "list_invoices",
    "register_gstin",
    "registration",
    "unregister_gstin",
]


class NotBilled(Conflict):
    def __init__(self, session_id: int) -> None:
        super().__init__(
            f"session {session_id} has no bill in the ledger", entity="session", key=session_id
        )


class BillMismatch(Conflict):
    def __init__(self, session_id: int, billed: int, priced: int) -> None:
        super().__init__(
            f"session {session_id} was billed {billed} paise, its lines add up to {priced}",
            entity="session",
            key=session_id,
        )


class FeeNotBilled(Conflict):
    def __init__(self, payment_id: str) -> None:
        super().__init__(
            f"no cancellation fee of payment {payment_id} is billed in the ledger",
            entity="payment",
            key=payment_id,
        )


class NotInvoiced(Conflict):
    def __init__(self, session_id: int) -> None:
        super().__init__(
            f"session {session_id} has no invoice to credit", entity="session", key=session_id
        )


class CreditExceedsInvoice(Conflict):
    def __init__(self, serial: str, amount_paise: int) -> None:
        super().__init__(
            f"a credit of {amount_paise} paise exceeds what is left of invoice {serial}",
            entity="invoice",
            key=serial,
        )


# --- issuing --------------------------------------------------------------------------------


async def _locked_session(db: AsyncSession, session_id: int) -> ChargingSession:
    row = await db.scalar(
        select(ChargingSession).where(ChargingSession.id == session_id).with_for_update()
    )
    if row is None:
        raise NotFound("session", session_id)
    return row


async def _charger_and_host(db: AsyncSession, row: ChargingSession) -> tuple[Charger, Host]:
    if row.charger_id is not None:
        charger = await db.get(Charger, row.charger_id)
    else:
        charger = await db.scalar(select(Charger).where(Charger.device_id == row.device_id))
    if charger is None:
        raise NotFound("charger of session", row.id)
    return charger, await _host(db, charger)


async def _host(db: AsyncSession, charger: Charger) -> Host:
    host = await db.get(Host, charger.host_id)
    assert host is not None  # a foreign key
    return host


async def _next_number(
    db: AsyncSession, supplier: str, fy: int, kind: DocumentKind, *, count: int = 1
) -> int:
    """The next number of the series (the last of the next ``count``), taken in the caller's
    transaction (module docstring)."""
    number = await db.scalar(
        text(
            "INSERT INTO invoice_counters (supplier, fy, kind, last_number) "
            "VALUES (:supplier, :fy, :kind, :count) "
            "ON CONFLICT (supplier, fy, kind) "
            "DO UPDATE SET last_number = invoice_counters.last_number + :count "
            "RETURNING last_number"
        ),
        {"supplier": supplier, "fy": fy, "kind": kind.value, "count": count},
    )
    assert isinstance(number, int)
    return number


def _settings(billing: BillingSettings | None) -> BillingSettings:
    return billing if billing is not None else load_settings().billing


async def interstate(
    db: AsyncSession, session_id: int, *, billing: BillingSettings | None = None
) -> bool:
    """Whether the session's supply is inter-state (price it with ``interstate=True``)."""
    row = await db.get(ChargingSession, session_id)
    if row is None:
        raise NotFound("session", session_id)
    charger, host = await _charger_and_host(db, row)
    supplier = supplier_for(host, _settings(billing))
    return is_interstate(supplier, place_of_supply(charger, supplier))


async def charger_interstate(
    db: AsyncSession, charger_id: str, *, billing: BillingSettings | None = None
) -> bool:
    """Whether a supply at ``charger_id`` is inter-state (a booking's cancellation fee)."""
    charger = await db.get(Charger, charger_id)
    if charger is None:
        raise NotFound("charger", charger_id)
    supplier = supplier_for(await _host(db, charger), _settings(billing))
    return is_interstate(supplier, place_of_supply(charger, supplier))


async def _fee_bill(db: AsyncSession, payment_id: str) -> tuple[str, int]:
    """The driver billed a cancellation fee from ``payment_id`` and the total (the
    ledger's ``bill`` debit naming the payment and no session)."""
    rows = (
        await db.execute(
            select(LedgerEntry.account, func.sum(LedgerEntry.amount_paise))
            .where(
                LedgerEntry.payment_id == payment_id,
                LedgerEntry.session_id.is_(None),
                LedgerEntry.source == EntrySource.BILL,
                LedgerEntry.account.like("driver:%"),
            )
            .group_by(LedgerEntry.account)
        )
    ).all()
    billed = [(account, int(total)) for account, total in rows if total]
    if len(billed) != 1:
        raise FeeNotBilled(payment_id)
    account, total = billed[0]
    return account.removeprefix("driver:"), total


async def issue_fee_invoice(
    db: AsyncSession,
    booking_id: str,
    *,
    payment_id: str,
    quote: Quote,
    billing: BillingSettings | None = None,
    now: datetime | None = None,
) -> Invoice:
    """The tax invoice of a booking's kept cancellation fee (a supply without a session),
    issued once per booking, under the same contract as :func:`issue_invoice`: the fee's
    ``bill`` entries (naming ``payment_id``) must be in the ledger and total ``quote``'s
    total, and the number is taken in the caller's transaction."""
    booking = await db.scalar(
        select(Booking).where(Booking.id == booking_id).with_for_update(key_share=True)
    )
    if booking is None:
        raise NotFound("booking", booking_id)
    existing = await db.scalar(
        select(Invoice).where(Invoice.booking_id == booking_id, Invoice.kind == "invoice")
    )
    if existing is not None:
        return existing
    charger = await db.get(Charger, booking.charger_id)
    assert charger is not None  # a foreign key
    host = await _host(db, charger)
    driver_id, billed = await _fee_bill(db, payment_id)
    if quote.total_paise != billed:
        raise Conflict(
            f"booking {booking_id}'s fee was billed {billed} paise, its lines add up to "
            f"{quote.total_paise}",
            entity="booking",
            key=booking_id,
        )
    supplier = supplier_for(host, _settings(billing))
    place = place_of_supply(charger, supplier)
    recipient = await db.get(User, driver_id)
    return await _insert(
        db,
        kind=DocumentKind.INVOICE,
        supplier=supplier,
        place=place,
        amounts=document.invoice_amounts(quote, interstate=is_interstate(supplier, place)),
        session_id=None,
        booking_id=booking_id,
        host_id=host.id,
        driver_id=driver_id,
        recipient_name=recipient.name if recipient is not None else "",
        lines=document.invoice_lines(quote),
        now=now,
        description=document.FEE_DESCRIPTION,
    )


async def issue_invoice(
    db: AsyncSession,
    session_id: int,
    *,
    quote: Quote | None = None,
    billing: BillingSettings | None = None,
    now: datetime | None = None,
) -> Invoice:
    """The tax invoice of billed session ``session_id`` (``sessions.id``), issued once
    (module docstring: the contract)."""
    return (await issue_invoices(db, {session_id: quote}, billing=billing, now=now))[session_id]


async def issue_invoices(
    db: AsyncSession,
    quotes: Mapping[int, Quote | None],
    *,
    billing: BillingSettings | None = None,
    now: datetime | None = None,
) -> dict[int, Invoice]:
    """:func:`issue_invoice` for many billed sessions (``{session_id: quote or None}``): the
    same contract, in a fixed number of statements (the settle job bills in batches). The
    sessions are locked in id order, and each series' counter is moved once by the number
    of invoices it gets, in (supplier, year) order, so numbers stay gap-free and two batches
    never wait on each other's locks in opposite orders."""
    ids = sorted(quotes)
    if not ids:
        return {}
    rows = {
        row.id: row
        for row in await db.scalars(
            select(ChargingSession)
            .where(ChargingSession.id.in_(ids))
            .order_by(ChargingSession.id)
            .with_for_update()
        )
    }
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFound("session", missing[0])
    issued = {
        inv.session_id: inv
        for inv in await db.scalars(
            select(Invoice).where(Invoice.session_id.in_(ids), Invoice.kind == "invoice")
        )
        if inv.session_id is not None
    }
    todo = [i for i in ids if i not in issued]
    settings = _settings(billing)
    bills = await _bills(db, todo)
    drafts: list[tuple[int, Supplier, str, Amounts, str, str, Quote]] = []
    for session_id in todo:
        row = rows[session_id]
        charger, host = await _charger_and_host(db, row)
        if session_id not in bills:
            raise NotBilled(session_id)
        driver_id, billed = bills[session_id]
        supplier = supplier_for(host, settings)
        place = place_of_supply(charger, supplier)
        inter = is_interstate(supplier, place)
        quote = quotes[session_id]
        if quote is None:
            until = row.stopped_at or row.started_at
            usage = session_usage(energy_wh=row.energy_wh, started_at=row.started_at, until=until)
            quote = price(
                Tariff.from_charger(charger),
                usage,
                Rates(commission_bp=settings.commission_bp),
                interstate=inter,
            )
        if quote.total_paise != billed:
            raise BillMismatch(session_id, billed, quote.total_paise)
        amounts = document.invoice_amounts(quote, interstate=inter)
        drafts.append((session_id, supplier, place, amounts, host.id, driver_id, quote))
    at = now if now is not None else datetime.now(UTC)
    fy = document.financial_year(document.issue_date(at))
    counts: dict[str, int] = {}
    for _, supplier, *_rest in drafts:
        counts[supplier.key] = counts.get(supplier.key, 0) + 1
    # Each series moved once, in key order: the first number of the block it took.
    first = {
        key: await _next_number(db, key, fy, DocumentKind.INVOICE, count=n) - n + 1
        for key, n in sorted(counts.items())
    }
    for session_id, supplier, place, amounts, host_id, driver_id, quote in drafts:
        recipient = await db.get(User, driver_id)
        number = first[supplier.key]
        first[supplier.key] += 1
        issued[session_id] = _document(
            kind=DocumentKind.INVOICE,
            supplier=supplier,
            place=place,
            amounts=amounts,
            session_id=session_id,
            host_id=host_id,
            driver_id=driver_id,
            recipient_name=recipient.name if recipient is not None else "",
            lines=document.invoice_lines(quote),
            at=at,
            number=number,
        )
        db.add(issued[session_id])
    if drafts:
        await db.flush()
    return issued


async def _bills(db: AsyncSession, session_ids: list[int]) -> dict[int, tuple[str, int]]:
    """Per session, the driver billed and the total (the ledger's ``bill`` debit); a session
    without exactly one billed driver is left out (:class:`NotBilled`)."""
    if not session_ids:
        return {}
    rows = (
        await db.execute(
            select(LedgerEntry.session_id, LedgerEntry.account, func.sum(LedgerEntry.amount_paise))
            .where(
                LedgerEntry.session_id.in_(session_ids),
                LedgerEntry.source == EntrySource.BILL,
                LedgerEntry.account.like("driver:%"),
            )
            .group_by(LedgerEntry.session_id, LedgerEntry.account)
        )
    ).all()
    found: dict[int, list[tuple[str, int]]] = {}
    for session_id, account, total in rows:
        if total and session_id is not None:
            found.setdefault(session_id, []).append((account, int(total)))
    return {
        session_id: (billed[0][0].removeprefix("driver:"), billed[0][1])
        for session_id, billed in found.items()
        if len(billed) == 1
    }


async def issue_credit_note(
    db: AsyncSession,
    session_id: int,
    *,
    amount_paise: int,
    reason: str,
    refund_id: str | None = None,
    now: datetime | None = None,
) -> Invoice:
    """A credit note for ``amount_paise`` (GST included) refunded after session
    ``session_id`` was invoiced; once per ``refund_id`` when one is given (a second call
    returns the first). Raises :class:`NotInvoiced`, :class:`CreditExceedsInvoice`."""
    await _locked_session(db, session_id)
    if refund_id is not None:
        existing = await db.scalar(select(Invoice).where(Invoice.refund_id == refund_id))
        if existing is not None:
            return existing
    original = await db.scalar(
        select(Invoice).where(Invoice.session_id == session_id, Invoice.kind == "invoice")
    )
    if original is None:
        raise NotInvoiced(session_id)
    notes = (
        await db.scalars(
            select(Invoice).where(Invoice.original_id == original.id, Invoice.kind == "credit_note")
        )
    ).all()
    credited = Amounts(
        sum(n.taxable_paise for n in notes),
        sum(n.cgst_paise for n in notes),
        sum(n.sgst_paise for n in notes),
        sum(n.igst_paise for n in notes),
    )
    try:
        amounts = document.credit_amounts(_amounts(original), credited, amount_paise)
    except ValueError:
        raise CreditExceedsInvoice(original.serial, amount_paise) from None
    supplier = Supplier(
        original.supplier_name, original.supplier_address, original.supplier_gstin or ""
    )
    return await _insert(
        db,
        kind=DocumentKind.CREDIT_NOTE,
        supplier=supplier,
        place=original.place_of_supply_code,
        amounts=amounts,
        session_id=session_id,
        host_id=original.host_id,
        driver_id=original.driver_id,
        recipient_name=original.recipient_name,
        lines=[
            {
                "kind": "refund",
                "amount_paise": amounts.taxable_paise,
                "quantity": 1,
                "unit": "refund",
            }
        ],
        now=now,
        original=original,
        refund_id=refund_id,
        reason=reason[:200],
    )


def _amounts(invoice: Invoice) -> Amounts:
    return Amounts(
        invoice.taxable_paise, invoice.cgst_paise, invoice.sgst_paise, invoice.igst_paise
    )


async def _insert(
    db: AsyncSession,
    *,
    kind: DocumentKind,
    supplier: Supplier,
    place: str,
    amounts: Amounts,
    session_id: int | None,
    host_id: str,
    driver_id: str,
    recipient_name: str,
    lines: list[dict[str, object]],
    now: datetime | None,
    original: Invoice | None = None,
    refund_id: str | None = None,
    reason: str | None = None,
    booking_id: str | None = None,
    description: str = document.DESCRIPTION,
) -> Invoice:
    at = now if now is not None else datetime.now(UTC)
    fy = document.financial_year(document.issue_date(at))
    invoice = _document(
        kind=kind,
        supplier=supplier,
        place=place,
        amounts=amounts,
        session_id=session_id,
        host_id=host_id,
        driver_id=driver_id,
        recipient_name=recipient_name,
        lines=lines,
        at=at,
        number=await _next_number(db, supplier.key, fy, kind),
        original=original,
        refund_id=refund_id,
        reason=reason,
        booking_id=booking_id,
        description=description,
    )
    db.add(invoice)
    await db.flush()
    return invoice


def _document(
    *,
    kind: DocumentKind,
    supplier: Supplier,
    place: str,
    amounts: Amounts,
    session_id: int | None,
    host_id: str,
    driver_id: str,
    recipient_name: str,
    lines: list[dict[str, object]],
    at: datetime,
    number: int,
    original: Invoice | None = None,
    refund_id: str | None = None,
    reason: str | None = None,
    booking_id: str | None = None,
    description: str = document.DESCRIPTION,
) -> Invoice:
    """An invoice or credit note numbered ``number`` of its series, issued ``at``."""
    on = document.issue_date(at)
    fy = document.financial_year(on)
    series = Series.INVOICE if kind is DocumentKind.INVOICE else Series.CREDIT_NOTE
    return Invoice(
        kind=kind,
        supplier=supplier.key,
        fy=fy,
        number=number,
        serial=document.serial(series, fy, number),
        session_id=session_id,
        booking_id=booking_id,
        original_id=original.id if original is not None else None,
        refund_id=refund_id,
        host_id=host_id,
        driver_id=driver_id,
        issued_at=at,
        issue_date=on,
        supplier_name=supplier.name,
        supplier_address=supplier.address,
        supplier_gstin=supplier.gstin or None,
        supplier_state_code=supplier.state_code,
        recipient_name=recipient_name or "Driver",
        recipient_state_code=place,
        place_of_supply_code=place,
        sac=document.SAC,
        description=description,
        taxable_paise=amounts.taxable_paise,
        cgst_paise=amounts.cgst_paise,
        sgst_paise=amounts.sgst_paise,
        igst_paise=amounts.igst_paise,
        total_paise=amounts.total_paise,
        gst_bp=GST_RATE_BP,
        lines=lines,
        reason=reason,
    )


# --- a host's GST registration -------------------------------------------------------------


async def _own_host(db: AsyncSession, user_id: str) -> Host:
    host = await db.scalar(select(Host).where(Host.user_id == user_id).with_for_update())
    if host is None:
        raise NotFound("host", user_id)
    return host


async def registration(db: AsyncSession, user_id: str) -> Host:
    """The signed-in host's row (404 for a user who is no host)."""
    host = await db.scalar(select(Host).where(Host.user_id == user_id))
    if host is None:
        raise NotFound("host", user_id)
    return host


async def register_gstin(
    db: AsyncSession, user_id: str, *, gstin: str, legal_name: str, address: str, pincode: str
) -> Host:
    """Record the host's GSTIN (checked to its check character) and the legal name and
    address invoices print; sessions billed from now on are theirs to invoice, in their
    GSTIN's series. A GSTIN another host holds is a 409."""
    value = validate_gstin(gstin)
    host = await _own_host(db, user_id)
    host.gstin, host.legal_name, host.address, host.pincode = value, legal_name, address, pincode
    try:
        with refusals():
            async with db.begin_nested():
                await db.flush()
    except DatabaseRefused as exc:
        if not exc.integrity:
            raise
        raise Conflict(
            "that GSTIN is registered to another host", entity="gstin", key=value
        ) from None
    return host


async def unregister_gstin(db: AsyncSession, user_id: str) -> Host:
    """The host is no longer GST-registered: the platform supplies their next sessions."""
    host = await _own_host(db, user_id)
    host.gstin = None
    await db.flush()
    return host


# --- reading --------------------------------------------------------------------------------


def _visible(principal: Principal) -> ColumnElement[bool]:
    if principal.has(Role.ADMIN):
        return Invoice.id.is_not(None)
    own_hosts = select(Host.id).where(Host.user_id == principal.user_id).scalar_subquery()
    return or_(Invoice.driver_id == principal.user_id, Invoice.host_id.in_(own_hosts))


async def get_invoice(db: AsyncSession, principal: Principal, invoice_id: str) -> Invoice:
    invoice = await db.scalar(select(Invoice).where(Invoice.id == invoice_id, _visible(principal)))
    if invoice is None:
        raise NotFound("invoice", invoice_id)
    return invoice


async def list_invoices(
    db: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> list[Invoice]:
    """The invoices and credit notes the caller may read, newest first."""
    rows = await db.scalars(
        select(Invoice)
        .where(_visible(principal))
        .order_by(Invoice.issued_at.desc(), Invoice.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows)


async def session_public_id(db: AsyncSession, session_id: int | None) -> str | None:
    """The API's id of a session (the device's session ULID); None for none (a fee's
    invoice)."""
    if session_id is None:
        return None
    public = await db.scalar(
        select(ChargingSession.device_session_id).where(ChargingSession.id == session_id)
    )
    assert public is not None
    return public
