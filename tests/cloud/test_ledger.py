"""cloud.ledger.entries: what each money event writes — balanced, integer, sourced — and, over
random sequences of sessions billed, refunds, disputes and payouts, the ledger's invariants."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.billing.quote import Quote, Rates, Tariff, Usage, fee_quote, price
from cloud.chargers.models import PricingMode
from cloud.ledger.accounts import (
    EntrySource,
    InvalidEntry,
    UnbalancedTransaction,
    driver_account,
    host_account,
    is_account,
)
from cloud.ledger.entries import (
    CLEARING,
    COMMISSION,
    GST_PAYABLE,
    TCS_PAYABLE,
    Entry,
    Settlement,
    Txn,
    bill_txn,
    cancellation_fee_txn,
    capture_txn,
    dispute_refund_txn,
    payment_txn,
    payout_txn,
    plan_settlement,
    refund_txn,
    settle_session,
    split,
)

DRIVER, HOST = "01DRIVER", "01HOST"
#: Not an int of paise, as a caller with untyped input might pass (a float from JSON).
HALF: Any = 100.5
D, H = driver_account(DRIVER), host_account(HOST)


def _quote() -> Quote:
    # 7.4 kWh at 18.00 + 5.00 fee = 138.20 taxable; CGST 12.44 + SGST 12.44; total 163.08.
    return price(Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), Usage(timedelta(hours=1), 7400))


def _by_account(txn: Txn) -> dict[tuple[str, EntrySource], int]:
    out: dict[tuple[str, EntrySource], int] = defaultdict(int)
    for e in txn.entries:
        out[e.account, e.source] += e.amount_paise
    return dict(out)


def test_a_bill_for_a_registered_host_credits_them_the_gst_less_commission_gst_and_tcs() -> None:
    quote = _quote()
    assert (quote.taxable_paise, quote.gst_paise, quote.total_paise) == (13820, 2488, 16308)
    txn = bill_txn(
        session_id=7, driver_id=DRIVER, host_id=HOST, quote=quote, host_gst_registered=True
    )
    assert _by_account(txn) == {
        (D, EntrySource.BILL): 16308,
        (H, EntrySource.HOST_EARNING): -(13820 - 1382),
        # Their output GST credited (2488), the GST on the commission (18 % of 13.82 = 2.4876
        # -> 2.49) debited.
        (H, EntrySource.GST): -2488 + 249,
        (H, EntrySource.TCS): 69,  # 0.5 % of 138.20 = 0.691 -> 0.69
        (COMMISSION, EntrySource.COMMISSION): -1382,
        (GST_PAYABLE, EntrySource.GST): -249,
        (TCS_PAYABLE, EntrySource.TCS): -69,
    }
    assert all(e.session_id == 7 for e in txn.entries)
    s = split(quote, host_gst_registered=True)
    assert s.host_net_paise == 12438 + 2488 - 249 - 69


def test_a_bill_for_an_unregistered_host_leaves_the_gst_with_the_platform() -> None:
    txn = bill_txn(
        session_id=7, driver_id=DRIVER, host_id=HOST, quote=_quote(), host_gst_registered=False
    )
    assert _by_account(txn) == {
        (D, EntrySource.BILL): 16308,
        (H, EntrySource.HOST_EARNING): -12438,
        (COMMISSION, EntrySource.COMMISSION): -1382,
        (GST_PAYABLE, EntrySource.GST): -2488,
    }


def test_a_free_session_bills_nothing() -> None:
    free = price(Tariff(PricingMode.PER_KWH, 0, 0, 0, 0), Usage(timedelta(hours=1), 100))
    txn = bill_txn(
        session_id=1, driver_id=DRIVER, host_id=HOST, quote=free, host_gst_registered=True
    )
    assert txn.entries == ()


def test_capture_refund_payment_payout_and_dispute_move_the_money_both_ways() -> None:
    assert _by_account(capture_txn(payment_id="P", driver_id=DRIVER, amount_paise=500)) == {
        (CLEARING, EntrySource.CAPTURE): 500,
        (D, EntrySource.CAPTURE): -500,
    }
    assert _by_account(payment_txn(payment_id="P", driver_id=DRIVER, amount_paise=5)) == {
        (CLEARING, EntrySource.PAYMENT): 5,
        (D, EntrySource.PAYMENT): -5,
    }
    refund = refund_txn(payment_id="P", driver_id=DRIVER, amount_paise=200, refund_id="R")
    assert _by_account(refund) == {
        (D, EntrySource.REFUND): 200,
        (CLEARING, EntrySource.REFUND): -200,
    }
    assert {e.refund_id for e in refund.entries} == {"R"}
    assert _by_account(payout_txn(payout_id="O", host_id=HOST, amount_paise=900)) == {
        (H, EntrySource.PAYOUT): 900,
        (CLEARING, EntrySource.PAYOUT): -900,
    }

    def dispute(host: int, platform: int, gst: int, *, gst_from_host: bool = False) -> Txn:
        return dispute_refund_txn(
            session_id=3,
            driver_id=DRIVER,
            host_id=HOST,
            host_paise=host,
            platform_paise=platform,
            gst_paise=gst,
            gst_from_host=gst_from_host,
            memo="dispute",
        )

    assert _by_account(dispute(40, 0, 0)) == {
        (H, EntrySource.DISPUTE_ADJUSTMENT): 40,
        (D, EntrySource.DISPUTE_ADJUSTMENT): -40,
    }
    # The credit note's GST back from gst_payable (the platform supplied), the rest absorbed.
    assert _by_account(dispute(0, 30, 10)) == {
        (COMMISSION, EntrySource.DISPUTE_ADJUSTMENT): 30,
        (GST_PAYABLE, EntrySource.GST): 10,
        (D, EntrySource.DISPUTE_ADJUSTMENT): -40,
    }
    # A GST-registered host supplied it: the GST is the host's to give back.
    assert _by_account(dispute(30, 0, 10, gst_from_host=True)) == {
        (H, EntrySource.DISPUTE_ADJUSTMENT): 30,
        (H, EntrySource.GST): 10,
        (D, EntrySource.DISPUTE_ADJUSTMENT): -40,
    }
    with pytest.raises(InvalidEntry):
        dispute(40, -1, 1)


@pytest.mark.parametrize(
    ("authorized", "billed", "partial", "plan"),
    [
        (20000, 16308, False, Settlement(20000, 3692, 0)),  # Razorpay: capture all, refund
        (20000, 16308, True, Settlement(16308, 0, 0)),  # Stripe: capture what was billed
        (10000, 16308, False, Settlement(10000, 0, 6308)),  # overstay: the rest is due
        (10000, 16308, True, Settlement(10000, 0, 6308)),
        (10000, 0, False, Settlement(10000, 10000, 0)),  # nothing billed: all back
        (10000, 0, True, Settlement(0, 0, 0)),
    ],
)
def test_the_settlement_plan(authorized: int, billed: int, partial: bool, plan: Settlement) -> None:
    assert (
        plan_settlement(authorized_paise=authorized, billed_paise=billed, partial_capture=partial)
        == plan
    )


def test_settling_a_session_captures_bills_and_refunds_in_that_order() -> None:
    plan, txns = settle_session(
        session_id=9,
        payment_id="P",
        driver_id=DRIVER,
        host_id=HOST,
        authorized_paise=20000,
        quote=_quote(),
        host_gst_registered=False,
        partial_capture=False,
        refund_id="R",
    )
    assert plan == Settlement(20000, 3692, 0)
    sources = [{e.source for e in t.entries} for t in txns]
    assert EntrySource.CAPTURE in sources[0]
    assert EntrySource.BILL in sources[1]
    assert EntrySource.REFUND in sources[2]
    assert all(e.payment_id == "P" and e.session_id == 9 for t in txns for e in t.entries)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: Entry(CLEARING, 0, EntrySource.CAPTURE), InvalidEntry),
        (lambda: Entry(CLEARING, HALF, EntrySource.CAPTURE), InvalidEntry),
        (lambda: Entry(CLEARING, amount_paise=True, source=EntrySource.CAPTURE), InvalidEntry),
        (lambda: Entry("bank", 5, EntrySource.CAPTURE), InvalidEntry),
        (lambda: driver_account("x y"), InvalidEntry),
        (lambda: Txn("m", (Entry(CLEARING, 5, EntrySource.CAPTURE),)), UnbalancedTransaction),
        (lambda: capture_txn(payment_id="P", driver_id=DRIVER, amount_paise=0), InvalidEntry),
        (lambda: refund_txn(payment_id="P", driver_id=DRIVER, amount_paise=-3), InvalidEntry),
        (lambda: payout_txn(payout_id="O", host_id=HOST, amount_paise=HALF), InvalidEntry),
        (
            lambda: plan_settlement(authorized_paise=0, billed_paise=0, partial_capture=False),
            InvalidEntry,
        ),
    ],
)
def test_malformed_entries_are_refused(build: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()  # type: ignore[operator]


def test_accounts() -> None:
    assert is_account("provider_clearing")
    assert is_account(D)
    assert is_account(H)
    for wrong in ("host:", "driver:a;b", "cash", "provider_clearing2"):
        assert not is_account(wrong)


# --- properties over random histories -------------------------------------------------------

prices = st.integers(0, 200_000)
tariffs = st.builds(
    Tariff,
    mode=st.sampled_from(PricingMode),
    price_per_kwh_paise=prices,
    price_per_hour_paise=prices,
    session_fee_paise=st.integers(0, 5000),
    min_charge_paise=st.integers(0, 20_000),
    idle_fee_per_min_paise=st.integers(0, 1000),
    idle_grace_min=st.integers(0, 30),
)
usages = st.builds(
    Usage,
    duration=st.integers(0, 8 * 3600).map(lambda s: timedelta(seconds=s)),
    energy_wh=st.integers(0, 80_000),
    idle=st.integers(0, 7200).map(lambda s: timedelta(seconds=s)),
)


@dataclass(frozen=True)
class SessionPlan:
    tariff: Tariff
    usage: Usage
    commission_bp: int
    authorized_paise: int
    registered: bool
    partial_capture: bool
    host: int
    driver: int
    #: Share (0..1) of the bill given back in a dispute, and whether the platform absorbs it.
    dispute_share: float
    platform_absorbs: bool


session_plans = st.builds(
    SessionPlan,
    tariff=tariffs,
    usage=usages,
    commission_bp=st.integers(0, 3000),
    authorized_paise=st.integers(1, 2_000_000),
    registered=st.booleans(),
    partial_capture=st.booleans(),
    host=st.integers(0, 2),
    driver=st.integers(0, 3),
    dispute_share=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]),
    platform_absorbs=st.booleans(),
)


@dataclass
class Books:
    """An in-memory ledger that keeps every transaction it is given."""

    txns: list[Txn] = field(default_factory=list)

    def post(self, txn: Txn) -> None:
        self.txns.append(txn)

    @property
    def entries(self) -> list[Entry]:
        return [e for t in self.txns for e in t.entries]

    def balance(self, account: str) -> int:
        return sum(e.amount_paise for e in self.entries if e.account == account)


def run_history(
    plans: list[SessionPlan], payout_shares: list[float]
) -> tuple[Books, dict[int, int]]:
    """Bill every planned session (capture, bill, refund; a due paid later; a dispute given
    back and refunded), then pay each host out a share of what it has earned."""
    books = Books()
    disputed: dict[int, int] = {}
    for session_id, plan in enumerate(plans, start=1):
        quote = price(plan.tariff, plan.usage, Rates(commission_bp=plan.commission_bp))
        driver, host = f"D{plan.driver}", f"H{plan.host}"
        payment = f"P{session_id}"
        settled, txns = settle_session(
            session_id=session_id,
            payment_id=payment,
            driver_id=driver,
            host_id=host,
            authorized_paise=plan.authorized_paise,
            quote=quote,
            host_gst_registered=plan.registered,
            partial_capture=plan.partial_capture,
        )
        for txn in txns:
            books.post(txn)
        # What each payment holds now, after its own refund: a later refund draws on these.
        kept = {payment: settled.capture_paise - settled.refund_paise}
        if settled.due_paise:
            books.post(
                payment_txn(
                    payment_id=f"{payment}-due",
                    driver_id=driver,
                    amount_paise=settled.due_paise,
                    session_id=session_id,
                )
            )
            kept[f"{payment}-due"] = settled.due_paise
        back = int(quote.host_share_paise * plan.dispute_share)
        if back:
            books.post(
                dispute_refund_txn(
                    session_id=session_id,
                    driver_id=driver,
                    host_id=host,
                    host_paise=0 if plan.platform_absorbs else back,
                    platform_paise=back if plan.platform_absorbs else 0,
                    gst_paise=0,
                    gst_from_host=False,
                    memo="dispute",
                )
            )
            left = back
            for paid_by, holds in kept.items():
                part = min(left, holds)
                if part:
                    books.post(
                        refund_txn(
                            payment_id=paid_by,
                            driver_id=driver,
                            amount_paise=part,
                            session_id=session_id,
                        )
                    )
                    left -= part
            assert left == 0, "a dispute gives back no more than was paid"
        disputed[session_id] = back
    for host_n, share in enumerate(payout_shares):
        host = f"H{host_n}"
        payable = -books.balance(host_account(host))
        amount = int(payable * share)
        if amount > 0:
            books.post(payout_txn(payout_id=f"O{host_n}", host_id=host, amount_paise=amount))
    return books, disputed


@settings(max_examples=300, deadline=None)
@given(
    plans=st.lists(session_plans, min_size=1, max_size=12),
    payout_shares=st.lists(st.floats(0, 1), min_size=3, max_size=3),
)
def test_the_ledger_keeps_its_invariants_over_any_history(
    plans: list[SessionPlan], payout_shares: list[float]
) -> None:
    books, disputed = run_history(plans, payout_shares)
    entries = books.entries
    # Every amount an int, every transaction and so the whole ledger sums to zero.
    assert all(type(e.amount_paise) is int and e.amount_paise != 0 for e in entries)
    assert all(sum(e.amount_paise for e in t.entries) == 0 for t in books.txns)
    assert sum(e.amount_paise for e in entries) == 0
    for session_id in range(1, len(plans) + 1):
        mine = [e for e in entries if e.session_id == session_id]
        captured = sum(
            e.amount_paise
            for e in mine
            if e.account == CLEARING and e.source in (EntrySource.CAPTURE, EntrySource.PAYMENT)
        )
        refunded = -sum(
            e.amount_paise for e in mine if e.account == CLEARING and e.source is EntrySource.REFUND
        )
        billed = sum(e.amount_paise for e in mine if e.source is EntrySource.BILL)
        # Per session: captured - refunded = billed, less what a dispute gave back.
        assert captured - refunded == billed - disputed[session_id]
    # No refund exceeds its payment.
    by_payment: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.account == CLEARING and e.payment_id is not None:
            by_payment[e.payment_id] += e.amount_paise
    assert all(net >= 0 for net in by_payment.values())
    # Every driver's money is accounted for: nothing held, nothing owed, once settled.
    for n in range(4):
        assert books.balance(driver_account(f"D{n}")) == 0
    # Payouts never exceed earnings: a host's balance never turns into a debt.
    for n in range(3):
        assert books.balance(host_account(f"H{n}")) <= 0
    # Tax and commission accounts only ever hold credits (owed or earned) or nothing.
    assert books.balance(GST_PAYABLE) <= 0
    assert books.balance(TCS_PAYABLE) <= 0


@settings(max_examples=300, deadline=None)
@given(
    cancellations=st.lists(
        st.tuples(
            st.integers(1, 2_000_000),  # the prepayment authorized
            st.floats(0, 1),  # the fee's share of it
            st.booleans(),  # partial capture (Stripe) or capture in full (Razorpay)
            st.booleans(),  # the host is GST-registered
            st.integers(0, 3000),  # commission, bp
            st.booleans(),  # an inter-state supply
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_kept_cancellation_fee_is_billed_and_the_money_adds_up(
    cancellations: list[tuple[int, float, bool, bool, int, bool]],
) -> None:
    """A late cancellation (cloud/payments/cancellation.py): the fee kept from the
    prepayment is billed to the host by :func:`fee_quote`; per payment captured - refunded =
    billed, the driver holds nothing afterwards, the ledger sums to zero."""
    books = Books()
    for n, (authorized, share, partial, registered, commission, inter) in enumerate(cancellations):
        fee = int(authorized * share)
        quote = fee_quote(fee, Rates(commission_bp=commission), interstate=inter)
        # The bill is the most the rule prices within the fee; what it cannot reach comes back.
        assert quote.total_paise <= fee <= quote.total_paise + 2
        assert sum(line.amount_paise for line in quote.lines) == quote.total_paise
        more = fee_quote(fee + 1, Rates(commission_bp=commission), interstate=inter)
        assert more.taxable_paise <= quote.taxable_paise + 1
        plan = plan_settlement(
            authorized_paise=authorized, billed_paise=quote.total_paise, partial_capture=partial
        )
        assert plan.due_paise == 0
        payment, driver = f"C{n}", f"D{n % 3}"
        if plan.capture_paise:
            books.post(
                capture_txn(payment_id=payment, driver_id=driver, amount_paise=plan.capture_paise)
            )
        if quote.total_paise:
            books.post(
                cancellation_fee_txn(
                    booking_id=f"B{n}",
                    payment_id=payment,
                    driver_id=driver,
                    host_id="H0",
                    quote=quote,
                    host_gst_registered=registered,
                )
            )
        if plan.refund_paise:
            books.post(
                refund_txn(payment_id=payment, driver_id=driver, amount_paise=plan.refund_paise)
            )
        mine = [e for e in books.entries if e.payment_id == payment]
        captured = sum(
            e.amount_paise
            for e in mine
            if e.account == CLEARING and e.source is EntrySource.CAPTURE
        )
        refunded = -sum(
            e.amount_paise for e in mine if e.account == CLEARING and e.source is EntrySource.REFUND
        )
        billed = sum(e.amount_paise for e in mine if e.source is EntrySource.BILL)
        assert captured - refunded == billed == quote.total_paise
        assert all(e.session_id is None for e in mine)
    assert all(type(e.amount_paise) is int for e in books.entries)
    assert sum(e.amount_paise for e in books.entries) == 0
    for n in range(3):
        assert books.balance(driver_account(f"D{n}")) == 0
    assert books.balance(host_account("H0")) <= 0
