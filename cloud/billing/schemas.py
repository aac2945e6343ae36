"""``POST /quotes``: what a driver asks and what the quote says. Money is integer paise."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, Field, Strict, model_validator

from cloud.billing.quote import LineKind
from cloud.bookings.schemas import AmountKind
from cloud.chargers.models import PricingMode
from cloud.schemas import Instant, RequestModel, WholeNumber, whole_number

#: A walk-up lasts at most as long as a booking may (cloud.bookings.policy.MAX_DURATION).
MAX_DURATION_MIN = 12 * 60
#: A walk-up energy cap well above any car's battery (the largest are ~200 kWh).
MAX_ENERGY_WH = 500_000

# The bounds before Strict and the validator: on ``WholeNumber | None`` pydantic writes them
# into the JSON Schema as "ge"/"le", which no JSON Schema tool reads (minimum/maximum here;
# tests/cloud/test_openapi_contract.py checks every request body).
DurationMin = Annotated[
    int, Field(ge=1, le=MAX_DURATION_MIN), Strict(), BeforeValidator(whole_number)
]
EnergyWh = Annotated[int, Field(ge=1, le=MAX_ENERGY_WH), Strict(), BeforeValidator(whole_number)]


class QuoteBasis(StrEnum):
    #: A booking window ``[start, end)``: the amount a booking of it would hold.
    WINDOW = "window"
    #: A walk-up for a duration: the whole time at the connector's full power.
    DURATION = "duration"
    #: A walk-up for an energy (per-kWh chargers only).
    ENERGY = "energy"


class QuoteRequest(RequestModel):
    """Exactly one of: ``start`` and ``end`` (a booking window, under the booking rules), or
    ``duration_min`` (a walk-up for that long), or ``energy_wh`` (a walk-up for that much
    energy, on a per-kWh charger)."""

    charger_id: str = Field(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")
    #: The connector number as printed on the charger (1, 2 …).
    connector: WholeNumber = Field(ge=1, le=32)
    start: Instant | None = None
    end: Instant | None = None
    duration_min: DurationMin | None = None
    energy_wh: EnergyWh | None = None

    schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"required": ["start", "end"]},
            {"required": ["duration_min"]},
            {"required": ["energy_wh"]},
        ],
        "dependentRequired": {"start": ["end"], "end": ["start"]},
    }

    @model_validator(mode="after")
    def _one_basis(self) -> QuoteRequest:
        if (self.start is None) != (self.end is None):
            raise ValueError("a window needs both start and end")
        given = [self.start is not None, self.duration_min is not None, self.energy_wh is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of: start and end, duration_min, energy_wh")
        return self

    @property
    def basis(self) -> QuoteBasis:
        if self.start is not None:
            return QuoteBasis.WINDOW
        return QuoteBasis.DURATION if self.duration_min is not None else QuoteBasis.ENERGY


class QuoteLineOut(BaseModel):
    kind: LineKind
    amount_paise: int
    #: How much was priced, in ``unit``: Wh (energy), ms (time, idle), session, paise (the
    #: minimum charge), bp (a tax line's rate, in basis points).
    quantity: int
    unit: str


class QuoteOut(BaseModel):
    charger_id: str
    connector: int
    pricing_mode: PricingMode
    basis: QuoteBasis
    #: ``exact``, or ``upper_bound`` when the quote prices the connector at full power (a
    #: per-kWh charger quoted for a time): the bill is then at most this.
    amount_kind: AmountKind
    #: The lines, in order; they sum to ``total_paise``.
    lines: list[QuoteLineOut]
    taxable_paise: int
    gst_paise: int
    total_paise: int
    currency: str = "INR"
    #: The Services Accounting Code the GST is charged under.
    sac: str
    #: Overstay terms, not in the total: after ``idle_grace_min`` minutes parked without
    #: charging, ``idle_fee_per_min_paise`` a minute (plus GST) is added to the bill.
    idle_fee_per_min_paise: int
    idle_grace_min: int
