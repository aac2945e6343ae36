"""What each money event writes to the ledger (pure): balanced transactions of entries.

A :class:`Txn` checks itself when built: every amount an ``int`` (not a ``bool``), none zero,
every account known, the entries summing to zero. Builders, one per event:

* :func:`capture_txn` — an authorization captured: the provider holds the driver's money,
  which we owe the driver until it is billed or refunded.
* :func:`payment_txn` — money received in one step (an amount due paid).
* :func:`bill_txn` — a session billed: the driver's money becomes the host's earning, the
  platform's commission and tax (the split below).
* :func:`cancellation_fee_txn` — a late cancellation's kept fee, billed the same way.
* :func:`refund_txn` — the unused part (or a disputed amount) returned to the driver.
* :func:`payout_txn` — a host's earnings paid out.
* :func:`dispute_refund_txn` — a dispute's refund given back to the driver: its taxable value
  from the host (or the platform), its GST from whoever owes that tax.
* :func:`settle_session` — a stopped session's capture, bill and refund, by
  :func:`plan_settlement`.

The split of a bill (docs/decisions.md, "the GST of a marketplace"). The host supplies the
charging; ChargeMitra is an electronic commerce operator (CGST Act s. 2(45)) that collects
the price. EV charging is not a service whose tax the operator owes under s. 9(5), so:

* a **GST-registered host** is the supplier of record: the GST on the charge is the host's
  output tax, collected for the host and credited to them; the platform's commission is its
  own supply to the host, with 18 % GST the host pays (deducted from the earning, an input
  credit for the host); and the platform collects TCS (s. 52) on the net taxable value,
  also deducted, credited to ``tcs_payable``;
* an **unregistered host** (a home charger below the threshold) cannot charge GST, so the
  platform is the supplier of record to the driver: it owes the GST on the whole charge
  (``gst_payable``) and pays the host the taxable value less the commission; no GST on a
  commission that is only the platform's margin, no TCS.

Either way the driver pays the same total (the quote's), and every transaction balances.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.billing.quote import GST_RATE_BP, Quote, div_half_up
from cloud.ledger.accounts import (
    EntrySource,
    InvalidEntry,
    PlatformAccount,
    UnbalancedTransaction,
    driver_account,
    host_account,
    is_account,
)

#: GST TCS under CGST Act s. 52: 0.5 % of the net taxable value (0.25 % CGST + 0.25 % SGST,
#: or 0.5 % IGST) since 10 July 2024 (Notification 15/2024-Central Tax); basis points.
DEFAULT_TCS_BP = 50

CLEARING = PlatformAccount.PROVIDER_CLEARING.value
COMMISSION = PlatformAccount.PLATFORM_COMMISSION.value
GST_PAYABLE = PlatformAccount.GST_PAYABLE.value
TCS_PAYABLE = PlatformAccount.TCS_PAYABLE.value


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a transaction: a debit (positive) or credit (negative) to ``account``."""

    account: str
    amount_paise: int
    source: EntrySource
    session_id: int | None = None
    payment_id: str | None = None
    refund_id: str | None = None
    payout_id: str | None = None

    def __post_init__(self) -> None:
        if type(self.amount_paise) is not int:
            raise InvalidEntry(self.account, self.amount_paise, "amount is not an int of paise")
        if self.amount_paise == 0:
            raise InvalidEntry(self.account, 0, "a zero entry records nothing")
        if not is_account(self.account):
            raise InvalidEntry(self.account, self.amount_paise, "not a ledger account")


@dataclass(frozen=True, slots=True)
class Txn:
    """A balanced set of entries, written together by :func:`cloud.ledger.service.post`."""

    memo: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        # The database checks the same at commit (migration 0009); this fails earlier, with
        # the memo, in the code that built it.
        total = sum(e.amount_paise for e in self.entries)
        if total != 0:
            raise UnbalancedTransaction(self.memo, total)


def _txn(memo: str, entries: list[Entry | None]) -> Txn:
    # Zero amounts (a free session's GST, a TCS of 0) are left out: every builder pairs or
    # sums its amounts before, so dropping a zero keeps the balance.
    return Txn(memo, tuple(e for e in entries if e is not None))


@dataclass(frozen=True, slots=True)
class Refs:
    """What an entry points at."""

    session_id: int | None = None
    payment_id: str | None = None
    refund_id: str | None = None
    payout_id: str | None = None


def _entry(account: str, amount: int, source: EntrySource, refs: Refs) -> Entry | None:
    if amount == 0:
        return None
    return Entry(
        account, amount, source, refs.session_id, refs.payment_id, refs.refund_id, refs.payout_id
    )


def _positive(amount_paise: int, what: str) -> None:
    if type(amount_paise) is not int or amount_paise <= 0:
        raise InvalidEntry(what, amount_paise, "must be a positive int of paise")


def capture_txn(
    *, payment_id: str, driver_id: str, amount_paise: int, session_id: int | None = None
) -> Txn:
    return _received(
        EntrySource.CAPTURE,
        f"capture of payment {payment_id}",
        payment_id=payment_id,
        driver_id=driver_id,
        amount_paise=amount_paise,
        session_id=session_id,
    )


def payment_txn(
    *, payment_id: str, driver_id: str, amount_paise: int, session_id: int | None = None
) -> Txn:
    return _received(
        EntrySource.PAYMENT,
        f"payment {payment_id}",
        payment_id=payment_id,
        driver_id=driver_id,
        amount_paise=amount_paise,
        session_id=session_id,
    )


def _received(
    source: EntrySource,
    memo: str,
    *,
    payment_id: str,
    driver_id: str,
    amount_paise: int,
    session_id: int | None,
) -> Txn:
    """Money the provider holds for us (clearing) credited to the driver who paid it."""
    _positive(amount_paise, source.value)
    refs = Refs(payment_id=payment_id, session_id=session_id)
    return _txn(
        memo,
        [
            _entry(CLEARING, amount_paise, source, refs),
            _entry(driver_account(driver_id), -amount_paise, source, refs),
        ],
    )


def refund_txn(
    *,
    payment_id: str,
    driver_id: str,
    amount_paise: int,
    session_id: int | None = None,
    refund_id: str | None = None,
) -> Txn:
    _positive(amount_paise, "refund")
    refs = Refs(payment_id=payment_id, session_id=session_id, refund_id=refund_id)
    return _txn(
        f"refund of payment {payment_id}",
        [
            _entry(driver_account(driver_id), amount_paise, EntrySource.REFUND, refs),
            _entry(CLEARING, -amount_paise, EntrySource.REFUND, refs),
        ],
    )


@dataclass(frozen=True, slots=True)
class Split:
    """How a bill's total divides (all non-negative; they sum to the total)."""

    host_earning_paise: int
    #: The GST on the charge credited to a registered host (their output tax), else 0.
    host_gst_paise: int
    commission_paise: int
    #: GST on the commission, owed by the platform, paid by a registered host; else 0.
    commission_gst_paise: int
    #: TCS withheld from a registered host's earning; else 0.
    tcs_paise: int
    #: The GST on the charge owed by the platform (unregistered host), else 0.
    platform_gst_paise: int

    @property
    def host_net_paise(self) -> int:
        """What the bill adds to the host's balance."""
        return (
            self.host_earning_paise
            + self.host_gst_paise
            - self.commission_gst_paise
            - self.tcs_paise
        )


def split(quote: Quote, *, host_gst_registered: bool, tcs_bp: int = DEFAULT_TCS_BP) -> Split:
    """The split of ``quote`` between host, platform and tax (module docstring)."""
    if host_gst_registered:
        return Split(
            host_earning_paise=quote.host_share_paise,
            host_gst_paise=quote.gst_paise,
            commission_paise=quote.commission_paise,
            commission_gst_paise=div_half_up(quote.commission_paise * GST_RATE_BP, 10_000),
            tcs_paise=div_half_up(quote.taxable_paise * tcs_bp, 10_000),
            platform_gst_paise=0,
        )
    return Split(
        host_earning_paise=quote.host_share_paise,
        host_gst_paise=0,
        commission_paise=quote.commission_paise,
        commission_gst_paise=0,
        tcs_paise=0,
        platform_gst_paise=quote.gst_paise,
    )


def bill_txn(
    *,
    session_id: int,
    driver_id: str,
    host_id: str,
    quote: Quote,
    host_gst_registered: bool,
    tcs_bp: int = DEFAULT_TCS_BP,
    payment_id: str | None = None,
) -> Txn:
    """The driver is charged ``quote.total_paise``; host, platform and tax are credited."""
    return _billed(
        f"bill of session {session_id}",
        Refs(session_id=session_id, payment_id=payment_id),
        driver_id=driver_id,
        host_id=host_id,
        quote=quote,
        host_gst_registered=host_gst_registered,
        tcs_bp=tcs_bp,
    )


def cancellation_fee_txn(
    *,
    booking_id: str,
    payment_id: str,
    driver_id: str,
    host_id: str,
    quote: Quote,
    host_gst_registered: bool,
    tcs_bp: int = DEFAULT_TCS_BP,
) -> Txn:
    """A late cancellation's kept fee billed like a session (``quote``: its
    :func:`cloud.billing.quote.fee_quote`): the host earns their share, the platform its
    commission, tax as for a session. No session: the entries name the booking's payment,
    whose capture and refund they balance (captured - refunded = billed)."""
    return _billed(
        f"cancellation fee of booking {booking_id}",
        Refs(payment_id=payment_id),
        driver_id=driver_id,
        host_id=host_id,
        quote=quote,
        host_gst_registered=host_gst_registered,
        tcs_bp=tcs_bp,
    )


def _billed(
    memo: str,
    refs: Refs,
    *,
    driver_id: str,
    host_id: str,
    quote: Quote,
    host_gst_registered: bool,
    tcs_bp: int,
) -> Txn:
    s = split(quote, host_gst_registered=host_gst_registered, tcs_bp=tcs_bp)
    driver, host = driver_account(driver_id), host_account(host_id)
    src = EntrySource
    return _txn(
        memo,
        [
            _entry(driver, quote.total_paise, src.BILL, refs),
            _entry(host, -s.host_earning_paise, src.HOST_EARNING, refs),
            _entry(host, -s.host_gst_paise, src.GST, refs),
            _entry(COMMISSION, -s.commission_paise, src.COMMISSION, refs),
            _entry(GST_PAYABLE, -s.platform_gst_paise, src.GST, refs),
            # The host pays the GST on the platform's commission out of the earning.
            _entry(host, s.commission_gst_paise, src.GST, refs),
            _entry(GST_PAYABLE, -s.commission_gst_paise, src.GST, refs),
            # TCS withheld from the host for the government (credited to the host's GSTIN).
            _entry(host, s.tcs_paise, src.TCS, refs),
            _entry(TCS_PAYABLE, -s.tcs_paise, src.TCS, refs),
        ],
    )


def payout_txn(*, payout_id: str, host_id: str, amount_paise: int) -> Txn:
    _positive(amount_paise, "payout")
    refs = Refs(payout_id=payout_id)
    return _txn(
        f"payout {payout_id}",
        [
            _entry(host_account(host_id), amount_paise, EntrySource.PAYOUT, refs),
            _entry(CLEARING, -amount_paise, EntrySource.PAYOUT, refs),
        ],
    )


def payout_reversal_txn(*, payout_id: str, host_id: str, amount_paise: int) -> Txn:
    """``amount_paise`` of a paid payout came back (a Stripe transfer reversal): the
    payout's debit undone for that much, so the host's account owes it again (payable)."""
    _positive(amount_paise, "payout reversal")
    refs = Refs(payout_id=payout_id)
    return _txn(
        f"payout {payout_id} reversed",
        [
            _entry(host_account(host_id), -amount_paise, EntrySource.PAYOUT, refs),
            _entry(CLEARING, amount_paise, EntrySource.PAYOUT, refs),
        ],
    )


def dispute_refund_txn(
    *,
    session_id: int,
    driver_id: str,
    host_id: str,
    host_paise: int,
    platform_paise: int,
    gst_paise: int,
    gst_from_host: bool,
    memo: str,
) -> Txn:
    """A dispute's refund given back to the driver's account in one transaction, split as
    its credit notes split it (cloud/disputes/service.py): the taxable value from the host's
    earning (``host_paise``) and the platform's commission (``platform_paise``), and the
    GST the notes reverse (``gst_paise``) from whoever owes that tax — the host's account
    when the host is the GST-registered supplier (``gst_from_host``: its bill credited it
    the GST to remit), else the platform's ``gst_payable``. The supply's value went down,
    so does the tax on it."""
    total = host_paise + platform_paise + gst_paise
    _positive(total, "dispute adjustment")
    for part in (host_paise, platform_paise, gst_paise):
        if type(part) is not int or part < 0:
            raise InvalidEntry("dispute adjustment", part, "parts must be non-negative ints")
    src = EntrySource.DISPUTE_ADJUSTMENT
    refs = Refs(session_id=session_id)
    host = host_account(host_id)
    return _txn(
        f"{memo} (session {session_id})"[:200],
        [
            _entry(host, host_paise, src, refs),
            _entry(COMMISSION, platform_paise, src, refs),
            _entry(host if gst_from_host else GST_PAYABLE, gst_paise, EntrySource.GST, refs),
            _entry(driver_account(driver_id), -total, src, refs),
        ],
    )


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a stopped session's payment ends: captured, refunded, still due (all paise)."""

    capture_paise: int
    refund_paise: int
    #: Billed beyond the prepayment (overstay): owed by the driver, collected later.
    due_paise: int


def plan_settlement(
    *, authorized_paise: int, billed_paise: int, partial_capture: bool
) -> Settlement:
    """Capture and refund for a bill against an authorization.

    ``partial_capture``: the provider captures less than it authorized (Stripe), so we
    capture the bill and refund nothing; otherwise (Razorpay) the authorization is captured
    whole and the unused part refunded.
    """
    _positive(authorized_paise, "authorization")
    if type(billed_paise) is not int or billed_paise < 0:
        raise InvalidEntry("bill", billed_paise, "must be a non-negative int of paise")
    covered = min(authorized_paise, billed_paise)
    due = billed_paise - covered
    if partial_capture:
        return Settlement(capture_paise=covered, refund_paise=0, due_paise=due)
    return Settlement(
        capture_paise=authorized_paise, refund_paise=authorized_paise - covered, due_paise=due
    )


def settle_session(
    *,
    session_id: int,
    payment_id: str,
    driver_id: str,
    host_id: str,
    authorized_paise: int,
    quote: Quote,
    host_gst_registered: bool,
    partial_capture: bool,
    tcs_bp: int = DEFAULT_TCS_BP,
    refund_id: str | None = None,
) -> tuple[Settlement, list[Txn]]:
    """A stopped session's transactions, in order: capture, bill, refund (each only when
    its amount is not zero). ``refund_id``: the refund row, when the caller made it."""
    plan = plan_settlement(
        authorized_paise=authorized_paise,
        billed_paise=quote.total_paise,
        partial_capture=partial_capture,
    )
    txns: list[Txn] = []
    if plan.capture_paise:
        txns.append(
            capture_txn(
                payment_id=payment_id,
                driver_id=driver_id,
                amount_paise=plan.capture_paise,
                session_id=session_id,
            )
        )
    bill = bill_txn(
        session_id=session_id,
        driver_id=driver_id,
        host_id=host_id,
        quote=quote,
        host_gst_registered=host_gst_registered,
        tcs_bp=tcs_bp,
        payment_id=payment_id,
    )
    if bill.entries:
        txns.append(bill)
    if plan.refund_paise:
        txns.append(
            refund_txn(
                payment_id=payment_id,
                driver_id=driver_id,
                amount_paise=plan.refund_paise,
                session_id=session_id,
                refund_id=refund_id,
            )
        )
    return plan, txns
