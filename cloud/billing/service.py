"""``POST /quotes`` (the I/O around :func:`cloud.billing.quote.price`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.billing.quote import (
    SAC_EV_CHARGING,
    Rates,
    Tariff,
    Usage,
    is_upper_bound,
    price,
    window_usage,
)
from cloud.billing.schemas import QuoteBasis, QuoteLineOut, QuoteOut, QuoteRequest
from cloud.bookings import policy
from cloud.bookings.schemas import AmountKind
from cloud.chargers.access import editable_charger, public_charger
from cloud.chargers.models import Charger, Connector, PricingMode
from cloud.errors import InvalidRequest, NotFound
from cloud.settings import BillingSettings


def rates(settings: BillingSettings) -> Rates:
    """The platform's rates, as configured."""
    return Rates(commission_bp=settings.commission_bp)


async def _quotable_charger(
    db: AsyncSession, principal: Principal | None, charger_id: str
) -> Charger:
    """A listed, approved charger — or any charger of the caller's own (or an admin's):
    a host prices a listing before it is approved. Anyone else's is a 404."""
    try:
        return await public_charger(db, charger_id)
    except NotFound:
        if principal is None:
            raise
        return await editable_charger(db, principal, charger_id)


async def quote(
    db: AsyncSession, principal: Principal | None, body: QuoteRequest, *, now: datetime
) -> QuoteOut:
    charger = await _quotable_charger(db, principal, body.charger_id)
    connector = await db.scalar(
        select(Connector).where(
            Connector.charger_id == charger.id, Connector.number == body.connector
        )
    )
    if connector is None:
        raise InvalidRequest(f"the charger has no connector {body.connector}", field="connector")
    tariff = Tariff.from_charger(charger)
    basis = body.basis
    upper = is_upper_bound(tariff)
    if basis is QuoteBasis.WINDOW:
        assert body.start is not None
        assert body.end is not None
        # The booking's own rules, so the quote is the amount the booking would hold.
        policy.check_range(body.start, body.end, now)
        usage = window_usage(body.end - body.start, connector.max_power_w)
    elif basis is QuoteBasis.DURATION:
        assert body.duration_min is not None
        usage = window_usage(timedelta(minutes=body.duration_min), connector.max_power_w)
    else:
        assert body.energy_wh is not None
        if tariff.mode is PricingMode.PER_HOUR:
            # The time that energy takes depends on the car: no honest bound exists.
            raise InvalidRequest(
                "this charger prices by the hour: quote a duration or a window",
                field="energy_wh",
            )
        usage = Usage(duration=timedelta(0), energy_wh=body.energy_wh)
        upper = False
    priced = price(tariff, usage)
    return QuoteOut(
        charger_id=charger.id,
        connector=connector.number,
        pricing_mode=tariff.mode,
        basis=basis,
        amount_kind=AmountKind.UPPER_BOUND if upper else AmountKind.EXACT,
        lines=[
            QuoteLineOut(
                kind=line.kind,
                amount_paise=line.amount_paise,
                quantity=line.quantity,
                unit=line.unit,
            )
            for line in priced.lines
        ],
        taxable_paise=priced.taxable_paise,
        gst_paise=priced.gst_paise,
        total_paise=priced.total_paise,
        sac=SAC_EV_CHARGING,
        idle_fee_per_min_paise=tariff.idle_fee_per_min_paise,
        idle_grace_min=tariff.idle_grace_min,
    )
