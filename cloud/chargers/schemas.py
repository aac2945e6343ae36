"""Listing requests and answers.

Requests refuse unknown fields (a typo in ``price_per_kwh_paise`` must not silently keep the
old price). Money is integer paise with an upper bound that catches a rupees/paise mix-up
(₹100/kWh is already far above any Indian tariff); power is integer watts.
Weekly times travel as ``"HH:MM"`` in the charger's local zone, with ``"24:00"`` for
"until midnight"; instants travel as ISO 8601 with an offset.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    Strict,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from cloud.chargers.availability import END_OF_DAY
from cloud.chargers.models import CurrentType, ModerationStatus, PricingMode
from cloud.schemas import NOT_BLANK_PATTERN, Instant, RequestModel, WholeNumber, whole_number
from protocols.enums import ConnectorStatus, ConnectorType

#: ₹10,000 per unit / per session: far above any real tariff, low enough to catch x100 slips.
MAX_PRICE_PAISE = 1_000_000
MAX_FEE_PAISE = 1_000_000
MAX_IDLE_FEE_PER_MIN_PAISE = 10_000
MAX_POWER_W = 400_000
MAX_CONNECTORS = 8
MAX_AMENITIES = 20
MAX_WINDOWS = 7 * 6

# The BeforeValidator comes last: constraints after it would not reach the integer schema.
Paise = Annotated[int, Strict(), Field(ge=0, le=MAX_PRICE_PAISE), BeforeValidator(whole_number)]
Text80 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 80, "pattern": NOT_BLANK_PATTERN}
    ),
]
# Lower-cased and stripped once the pattern has held (a leading space is refused, as the
# pattern says).
Amenity = Annotated[
    str,
    StringConstraints(to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,39}$"),
    AfterValidator(str.strip),
]

# fullmatch and [0-9]: "$" would also match before a final newline, and \d any script's digits.
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _parse_local_time(value: object) -> object:
    if isinstance(value, str):
        if value == "24:00":
            return END_OF_DAY
        match = _HHMM.fullmatch(value)
        if match is None:
            raise ValueError("expected HH:MM (00:00 to 24:00), local time")
        return time(int(match[1]), int(match[2]))
    if isinstance(value, time):
        return value
    # A number would become seconds past midnight (and 0 a time that broke the schedule).
    raise ValueError("expected HH:MM (00:00 to 24:00), local time")


def _show_local_time(value: time) -> str:
    return "24:00" if value == END_OF_DAY else value.strftime("%H:%M")


LocalTime = Annotated[
    time,
    BeforeValidator(_parse_local_time),
    PlainSerializer(_show_local_time, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"}),
]


class ConnectorIn(RequestModel):
    number: WholeNumber = Field(ge=1, le=32)
    type: ConnectorType
    current: CurrentType = CurrentType.AC
    max_power_w: WholeNumber = Field(ge=500, le=MAX_POWER_W)


class PricingIn(RequestModel):
    """How a session is priced: per kWh or per hour, plus optional fees (all paise). The
    mode's own price is above zero (the schema's ``if``/``then`` says it)."""

    schema_rules: ClassVar[dict[str, Any]] = {
        "allOf": [
            {
                "if": {"properties": {"mode": {"const": mode.value}}},
                "then": {
                    "properties": {f"price_{mode.value}_paise": {"minimum": 1}},
                    "required": [f"price_{mode.value}_paise"],
                },
            }
            for mode in PricingMode
        ]
    }

    mode: PricingMode
    price_per_kwh_paise: Paise = 0
    price_per_hour_paise: Paise = 0
    session_fee_paise: WholeNumber = Field(default=0, ge=0, le=MAX_FEE_PAISE)
    min_charge_paise: WholeNumber = Field(default=0, ge=0, le=MAX_FEE_PAISE)
    idle_fee_per_min_paise: WholeNumber = Field(default=0, ge=0, le=MAX_IDLE_FEE_PER_MIN_PAISE)
    idle_grace_min: WholeNumber = Field(default=10, ge=0, le=240)

    @model_validator(mode="after")
    def _priced_in_its_mode(self) -> PricingIn:
        if self.mode is PricingMode.PER_KWH and self.price_per_kwh_paise <= 0:
            raise ValueError("per_kwh pricing needs price_per_kwh_paise > 0")
        if self.mode is PricingMode.PER_HOUR and self.price_per_hour_paise <= 0:
            raise ValueError("per_hour pricing needs price_per_hour_paise > 0")
        return self


class CancellationIn(RequestModel):
    free_cancel_before_min: WholeNumber = Field(default=60, ge=0, le=7 * 24 * 60)
    late_cancel_fee_paise: WholeNumber = Field(default=0, ge=0, le=MAX_FEE_PAISE)


class WindowIn(RequestModel):
    """Open on ``weekday`` (0 = Monday) from ``opens_at`` to ``closes_at`` (local time)."""

    weekday: WholeNumber = Field(ge=0, le=6)
    opens_at: LocalTime
    closes_at: LocalTime

    @model_validator(mode="after")
    def _ordered(self) -> WindowIn:
        if not self.opens_at < self.closes_at:
            raise ValueError("opens_at must be before closes_at (use 24:00 for midnight)")
        return self


class AvailabilityIn(RequestModel):
    """The whole weekly schedule (replaces the previous one). An empty list closes it."""

    windows: list[WindowIn] = Field(max_length=MAX_WINDOWS)


def _to_cm(degrees: float) -> float:
    return round(degrees, 7)


class Location(RequestModel):
    address: str = Field(min_length=3, max_length=300)
    city: Text80
    state: Text80
    pincode: str = Field(pattern=r"^[1-9][0-9]{5}$")
    # Stored to 7 decimal places (about 1 cm): a subnormal such as 5e-324 would otherwise
    # underflow PostgreSQL's float arithmetic in earthdistance's ll_to_earth (a 500).
    latitude: Annotated[
        float,
        Field(ge=-90, le=90, allow_inf_nan=False, strict=True),
        AfterValidator(_to_cm),
    ]
    longitude: Annotated[
        float,
        Field(ge=-180, le=180, allow_inf_nan=False, strict=True),
        AfterValidator(_to_cm),
    ]


class ChargerCreate(RequestModel):
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=4000)
    location: Location
    connectors: list[ConnectorIn] = Field(min_length=1, max_length=MAX_CONNECTORS)
    pricing: PricingIn
    amenities: list[Amenity] = Field(default_factory=list, max_length=MAX_AMENITIES)
    instant_book: StrictBool = True
    cancellation: CancellationIn = CancellationIn()
    #: Weekly schedule; omitted means open all week, every hour.
    availability: list[WindowIn] | None = Field(default=None, max_length=MAX_WINDOWS)
    #: Listed chargers show in search once approved; a host can pause a listing.
    listed: StrictBool = True

    @field_validator("connectors")
    @classmethod
    def _distinct_numbers(cls, value: list[ConnectorIn]) -> list[ConnectorIn]:
        numbers = [c.number for c in value]
        if len(set(numbers)) != len(numbers):
            raise ValueError("connector numbers must be distinct")
        return value


class ChargerUpdate(RequestModel):
    """Only the fields given change; ``connectors`` replaces the whole set (by number)."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=4000)
    location: Location | None = None
    connectors: list[ConnectorIn] | None = Field(
        default=None, min_length=1, max_length=MAX_CONNECTORS
    )
    pricing: PricingIn | None = None
    amenities: list[Amenity] | None = Field(default=None, max_length=MAX_AMENITIES)
    instant_book: StrictBool | None = None
    cancellation: CancellationIn | None = None
    listed: StrictBool | None = None
    #: Attach one of the host's own devices (its agent) to this listing.
    device_id: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("connectors")
    @classmethod
    def _distinct_numbers(cls, value: list[ConnectorIn] | None) -> list[ConnectorIn] | None:
        if value is not None and len({c.number for c in value}) != len(value):
            raise ValueError("connector numbers must be distinct")
        return value


class BlockedPeriodIn(RequestModel):
    start: Instant
    end: Instant
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> BlockedPeriodIn:
        if not self.start < self.end:
            raise ValueError("start must be before end")
        return self


class ModerationIn(RequestModel):
    note: str | None = Field(default=None, max_length=500)


class ModerationNoteIn(RequestModel):
    """Reject and suspend say why."""

    note: str = Field(min_length=1, max_length=500)


# --- answers ---------------------------------------------------------------------------------


class ConnectorOut(BaseModel):
    number: int
    type: ConnectorType
    current: CurrentType
    max_power_w: int


class ConnectorLive(ConnectorOut):
    status: ConnectorStatus
    status_at: datetime | None


class PricingOut(BaseModel):
    mode: PricingMode
    price_per_kwh_paise: int
    price_per_hour_paise: int
    session_fee_paise: int
    min_charge_paise: int
    idle_fee_per_min_paise: int
    idle_grace_min: int


class CancellationOut(BaseModel):
    free_cancel_before_min: int
    late_cancel_fee_paise: int


class RatingOut(BaseModel):
    average: float | None
    count: int


class WindowOut(BaseModel):
    weekday: int
    opens_at: LocalTime
    closes_at: LocalTime


class AvailabilityOut(BaseModel):
    """Weekly windows in ``timezone`` (local wall-clock times)."""

    timezone: str
    windows: list[WindowOut]


class BlockedPeriodOut(BaseModel):
    id: int
    start: datetime
    end: datetime
    #: The same period in the charger's zone, for display.
    start_local: str
    end_local: str
    reason: str


class PhotoOut(BaseModel):
    id: str
    content_type: str
    size_bytes: int
    url: str


class LastReading(BaseModel):
    meter_id: str | None
    ts: datetime | None
    power_w: float | None
    energy_import_wh: float | None


class ChargerPublic(BaseModel):
    """What anyone sees of an approved, listed charger."""

    id: str
    name: str
    description: str
    address: str
    city: str
    state: str
    pincode: str
    latitude: float
    longitude: float
    timezone: str
    connectors: list[ConnectorOut]
    pricing: PricingOut
    cancellation: CancellationOut
    amenities: list[str]
    instant_book: bool
    rating: RatingOut
    #: The trusted badge: the host's KYC is verified (cloud/kyc/).
    verified_host: bool
    qr_code: str
    photos: list[PhotoOut]
    availability: AvailabilityOut


class ChargerStatusOut(BaseModel):
    online: bool
    last_seen_at: datetime | None
    connectors: list[ConnectorLive]
    last_readings: list[LastReading]


class ChargerView(ChargerPublic):
    """The public view plus live status (``GET /chargers/{id}``, ``GET /c/{code}``)."""

    status: ChargerStatusOut


class MeterHealthOut(BaseModel):
    """One meter of the attached device, as its latest status said (``device_meters``).

    ``last_good_at``: the estimated time of its last good reading (null: never, as far as
    the cloud knows); ``consecutive_errors``: failed polls since then; ``unavailable_blocks``:
    register blocks the meter refuses (their quantities are not read); ``reported_at``: when
    the status arrived (the device may be offline since)."""

    meter_id: str
    model: str
    available: bool
    errors: int
    consecutive_errors: int
    last_error: str | None
    last_good_at: datetime | None
    unavailable_blocks: list[str]
    reported_at: datetime


class ChargerHostView(ChargerPublic):
    """The owner's (and admins') view: moderation state and the attached device too, with
    the health of the device's meters (``meters``)."""

    host_id: str
    device_id: str | None
    meters: list[MeterHealthOut]
    listed: bool
    moderation_status: ModerationStatus
    moderation_note: str | None
    blocked_periods: list[BlockedPeriodOut]
    created_at: datetime
    updated_at: datetime


class HostChargerList(BaseModel):
    items: list[ChargerHostView]


class SearchHit(BaseModel):
    id: str
    name: str
    address: str
    city: str
    latitude: float
    longitude: float
    distance_m: float
    connectors: list[ConnectorOut]
    pricing: PricingOut
    amenities: list[str]
    instant_book: bool
    rating: RatingOut
    #: The trusted badge: the host's KYC is verified (cloud/kyc/).
    verified_host: bool


class SearchPage(BaseModel):
    """One page of results, nearest first; ``has_more`` says whether page + 1 has any."""

    items: list[SearchHit]
    page: int
    page_size: int
    has_more: bool


class TelemetryPoint(BaseModel):
    start: datetime
    count: int
    mean: float
    min: float
    max: float


class TelemetrySeries(BaseModel):
    charger_id: str
    device_id: str
    quantity: str
    bucket: str
    start: datetime
    end: datetime
    points: list[TelemetryPoint]
