"""Host earnings and payouts, the admin's payout decisions and payments view.

Host routes act on the caller's own host row only (it is looked up from the token, never
taken from the request), so a host sees only their own earnings and payouts; a driver or a
technician is refused by role (403). Admin routes need the admin role.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from cloud.audit.actor import AdminActor, HostActor
from cloud.deps import AdminUser, Db, HostUser, State
from cloud.errors import Conflict, DependencyUnavailable, NotFound
from cloud.kyc.storage import Sealer
from cloud.openapi import problems
from cloud.payments.models import (
    Payment,
    PaymentStatus,
    Payout,
    PayoutAccount,
    PayoutAccountKind,
    PayoutStatus,
)
from cloud.payments.provider import PaymentProvider
from cloud.payouts import accounts, rules, service
from cloud.payouts.schemas import (
    AdminPaymentList,
    AdminPaymentOut,
    BankAccountIn,
    EarningsOut,
    PayoutAccountIn,
    PayoutAccountOut,
    PayoutList,
    PayoutOut,
    PayoutRequestIn,
    PayoutSettingsIn,
    PayoutSettingsOut,
    RejectIn,
    StripeAccountIn,
    VpaIn,
)
from cloud.schemas import Instant, PathId
from cloud.state import AppState

router = APIRouter(tags=["payouts"])

Limit = Annotated[int, Query(ge=1, le=500)]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_text(value: object) -> object:
    # A query value is always text, and pydantic reads "0.5" as Unix time: only the
    # date-time text the schema offers is an instant here.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("an instant is ISO 8601 date-time text with an offset")
    return value


QueryInstant = Annotated[Instant, BeforeValidator(_iso_text)]
IdFilter = Annotated[str | None, Query(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")]


def _hold(state: AppState) -> timedelta:
    return timedelta(days=state.settings.billing.hold_days)


def _provider(state: AppState) -> PaymentProvider:
    if state.payments is None:
        raise DependencyUnavailable("payments", "no payment provider is configured")
    return state.payments


def _payout(p: Payout) -> PayoutOut:
    return PayoutOut(
        id=p.id,
        host_id=p.host_id,
        amount_paise=p.amount_paise,
        status=p.status,
        automatic=p.automatic,
        period_start=p.period_start,
        period_end=p.period_end,
        created_at=p.created_at,
        decided_at=p.decided_at,
        provider_ref=p.provider_ref,
        note=p.note,
    )


def _payment(p: Payment) -> AdminPaymentOut:
    return AdminPaymentOut(
        id=p.id,
        user_id=p.user_id,
        booking_id=p.booking_id,
        session_id=p.session_id,
        provider=p.provider,
        provider_order_id=p.provider_order_id,
        provider_payment_id=p.provider_payment_id,
        amount_paise=p.amount_paise,
        captured_paise=p.captured_paise,
        currency=p.currency,
        status=p.status,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


# --- the host's ------------------------------------------------------------------------------


@router.get("/host/earnings", responses=problems(404))
async def host_earnings(db: Db, state: State, user: HostUser) -> EarningsOut:
    """The caller's earnings from the ledger: earned, held (for ``billing.hold_days`` after
    billing, or while a dispute on the session is open), requested (in payouts not yet
    paid), payable and paid. 404 for a caller with no host profile."""
    host = await service.host_of_user(db, user.user_id)
    b = await service.earnings(db, host.id, now=datetime.now(UTC), hold=_hold(state))
    return EarningsOut(
        host_id=host.id,
        earned_paise=b.earned_paise,
        held_paise=b.held_paise,
        requested_paise=b.requested_paise,
        payable_paise=b.payable_paise,
        paid_paise=b.paid_paise,
        disputed_paise=b.disputed_paise,
        hold_days=state.settings.billing.hold_days,
        weekly_payouts=host.weekly_payouts,
    )


@router.get("/host/payouts", responses=problems(404))
async def host_payouts(db: Db, user: HostUser, limit: Limit = 100) -> PayoutList:
    """The caller's payouts, newest first."""
    host = await service.host_of_user(db, user.user_id)
    payouts = await service.list_payouts(db, host_id=host.id, limit=limit)
    return PayoutList(items=[_payout(p) for p in payouts])


@router.post("/host/payouts", status_code=201, responses=problems(404, 409))
async def request_payout(
    db: Db, state: State, user: HostUser, actor: HostActor, body: PayoutRequestIn | None = None
) -> PayoutOut:
    """Ask for a payout of ``amount_paise`` (omitted: the whole payable balance). It waits
    for an admin's approval (``pending``) and holds its amount out of the payable balance
    meanwhile. 403 ``kyc-required`` until the host's KYC is verified (``POST /host/kyc``);
    409 when the amount exceeds the payable balance (or nothing is payable)."""
    host = await service.host_of_user(db, user.user_id)
    payout = await service.request_payout(
        db,
        host_id=host.id,
        amount_paise=body.amount_paise if body else None,
        now=datetime.now(UTC),
        hold=_hold(state),
        requested_by=user.user_id,
        actor=actor,
    )
    return _payout(payout)


@router.put("/host/payout-settings", responses=problems(404))
async def payout_settings(db: Db, user: HostUser, body: PayoutSettingsIn) -> PayoutSettingsOut:
    """Weekly automatic payouts on or off: each week ``chargemitra-cloud payouts run`` pays
    a host who chose them (and whose KYC is verified) their payable balance, without an
    admin's approval."""
    host = await service.host_of_user(db, user.user_id)
    await service.set_weekly(db, host, weekly=body.weekly_payouts)
    return PayoutSettingsOut(host_id=host.id, weekly_payouts=host.weekly_payouts)


def _account(row: PayoutAccount) -> PayoutAccountOut:
    return PayoutAccountOut(
        host_id=row.host_id,
        kind=row.kind,
        holder_name=row.holder_name,
        ifsc=row.ifsc,
        account_number_masked=row.account_number_masked,
        vpa=row.vpa,
        stripe_account_id=row.stripe_account_id,
        registered=row.destination_ref is not None,
        updated_at=row.updated_at,
    )


@router.get("/host/payout-account", responses=problems(404))
async def get_payout_account(db: Db, user: HostUser) -> PayoutAccountOut:
    """Where the caller is paid out, the account number masked. 404 for a host who has not
    set one (or a caller with no host profile)."""
    host = await service.host_of_user(db, user.user_id)
    row = await accounts.get_account(db, host.id)
    if row is None:
        raise NotFound("payout account", host.id)
    return _account(row)


@router.put("/host/payout-account", responses=problems(404, 409, 503))
async def put_payout_account(
    db: Db, state: State, user: HostUser, actor: HostActor, body: PayoutAccountIn
) -> PayoutAccountOut:
    """Set where the caller is paid out (replacing any earlier destination): a bank account
    (IFSC, account number, holder) or a UPI VPA when payouts go through RazorpayX, a Stripe
    connected account (``acct_…``) when through Stripe; 409 for a kind the configured
    provider cannot pay to. It is registered with the provider on the next payout."""
    host = await service.host_of_user(db, user.user_id)
    kind = PayoutAccountKind(body.kind)
    provider = state.payments.name if state.payments is not None else None
    if provider is not None and kind not in rules.PAYABLE_KINDS.get(provider, frozenset()):
        raise Conflict(
            f"payouts go through {provider}, which cannot pay to a {kind.value}",
            entity="payout account",
            key=host.id,
        )
    details = accounts.AccountDetails(
        kind=kind,
        holder_name=body.holder_name,
        ifsc=body.ifsc if isinstance(body, BankAccountIn) else None,
        account_number=body.account_number if isinstance(body, BankAccountIn) else None,
        vpa=body.vpa if isinstance(body, VpaIn) else None,
        stripe_account_id=body.stripe_account_id if isinstance(body, StripeAccountIn) else None,
    )
    row = await accounts.set_account(db, host.id, details, actor, _sealer(state))
    await db.refresh(row)
    return _account(row)


def _sealer(state: AppState) -> Sealer | None:
    # The KYC key seals bank account numbers too (cloud/payouts/accounts.py).
    return state.kyc_documents.sealer if state.kyc_documents is not None else None


# --- the admin's -----------------------------------------------------------------------------


@router.get("/admin/payouts")
async def admin_payouts(
    *,
    db: Db,
    _admin: AdminUser,
    payout_status: Annotated[PayoutStatus | None, Query(alias="status")] = None,
    host_id: IdFilter = None,
    limit: Limit = 100,
) -> PayoutList:
    """Every host's payouts, newest first; filter by ``status`` and ``host_id``."""
    payouts = await service.list_payouts(db, host_id=host_id, status=payout_status, limit=limit)
    return PayoutList(items=[_payout(p) for p in payouts])


@router.post("/admin/payouts/{payout_id}/approve", responses=problems(409, 502, 503))
async def approve_payout(
    payout_id: PathId, state: State, admin: AdminUser, actor: AdminActor
) -> PayoutOut:
    """Approve a pending payout and pay it out through the payment provider; the answer
    says how it ended: ``paid``, ``failed`` (the provider refused: the amount is payable
    again; Razorpay and Stripe payouts are not supported yet), or ``processing`` (the
    provider has not confirmed). Approving a ``processing`` payout retries it (paid and
    booked once, whatever the retries); a ``paid`` one is answered as it is. 409 when it was
    rejected or failed, or the host's earnings no longer cover it; 502 when the provider
    could not be reached (the payout stays ``processing``: approve it again)."""
    payout = await service.approve(
        state.sessions,
        _provider(state),
        payout_id=payout_id,
        admin_id=admin.user_id,
        now=datetime.now(UTC),
        hold=_hold(state),
        sealer=_sealer(state),
        actor=actor,
    )
    return _payout(payout)


@router.post("/admin/payouts/{payout_id}/reject", responses=problems(409))
async def reject_payout(
    payout_id: PathId, db: Db, admin: AdminUser, actor: AdminActor, body: RejectIn
) -> PayoutOut:
    """Reject a pending payout (its amount is payable again); 409 once it is past pending."""
    payout = await service.reject(
        db,
        payout_id=payout_id,
        admin_id=admin.user_id,
        reason=body.reason,
        now=datetime.now(UTC),
        actor=actor,
    )
    return _payout(payout)


@router.get("/admin/payments")
async def admin_payments(
    *,
    db: Db,
    _admin: AdminUser,
    payment_status: Annotated[PaymentStatus | None, Query(alias="status")] = None,
    provider: Annotated[str | None, Query(pattern=r"^[a-z]{1,20}$")] = None,
    user_id: IdFilter = None,
    booking_id: IdFilter = None,
    created_from: Annotated[QueryInstant | None, Query(alias="from")] = None,
    created_to: Annotated[QueryInstant | None, Query(alias="to")] = None,
    limit: Limit = 100,
) -> AdminPaymentList:
    """Payments, newest first; filter by ``status``, ``provider``, ``user_id``,
    ``booking_id`` and creation time (``from`` inclusive, ``to`` exclusive). A payment that
    failed or never arrived stays here for an admin to see."""
    payments = await service.list_payments(
        db,
        service.PaymentFilter(
            status=payment_status,
            provider=provider,
            user_id=user_id,
            booking_id=booking_id,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
        ),
    )
    return AdminPaymentList(items=[_payment(p) for p in payments])
