"""``POST /quotes``: the price of a booking window or a walk-up, before anything is paid."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends

from cloud.accounts.tokens import Principal
from cloud.billing import service
from cloud.billing.schemas import QuoteOut, QuoteRequest
from cloud.deps import Db, optional_principal
from cloud.openapi import problems

router = APIRouter(tags=["billing"])

MaybeUser = Annotated[Principal | None, Depends(optional_principal)]


@router.post("/quotes", responses=problems(404))
async def create_quote(body: QuoteRequest, db: Db, principal: MaybeUser) -> QuoteOut:
    """What charging costs under the charger's tariff, GST included, line by line — by the
    one rule that also prices bookings and bills (cloud/billing/quote.py), so a booking of
    the same window holds exactly ``total_paise``, and no session within the window is
    billed more (idle fees after the grace period aside: their terms are in the answer).

    Anyone may quote a listed, approved charger; a host (or an admin) also their own
    unlisted one; any other charger is a 404.

    Rules the body's schema cannot state (422, naming the field): a window follows the
    booking rules — ``start`` before ``end``, both on a 15-minute boundary, ``start`` not in
    the past and within the booking horizon, 15 minutes to 12 hours; ``connector`` is one of
    the charger's; ``energy_wh`` only for a per-kWh charger (by the hour, the time an energy
    takes depends on the car)."""
    return await service.quote(db, principal, body, now=datetime.now(UTC))
