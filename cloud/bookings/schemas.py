"""Booking requests and answers. Money is integer paise; times are ISO 8601 with an offset."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from cloud.bookings.models import BookingStatus
from cloud.schemas import Instant, RequestModel, WholeNumber


class BookingCreate(RequestModel):
    """``start`` before ``end``, both on 15-minute boundaries (rules written in the route's
    description: JSON Schema cannot compare two fields)."""

    charger_id: str = Field(min_length=1, max_length=26)
    #: The connector number as printed on the charger (1, 2 …).
    connector: WholeNumber = Field(ge=1, le=32)
    start: Instant
    end: Instant
    note: str = Field(default="", max_length=500)


class BookingExtend(RequestModel):
    """A running booking's new end, on a 15-minute boundary after the current end (the
    whole booking at most 12 hours: rules in the route's description)."""

    end: Instant


class AmountKind(StrEnum):
    #: Per-hour pricing: the booking costs exactly this.
    EXACT = "exact"
    #: Per-kWh pricing: at most this (the connector at full power throughout); the session's
    #: metered energy decides the final amount.
    UPPER_BOUND = "upper_bound"


class BookingOut(BaseModel):
    id: str
    user_id: str
    charger_id: str
    connector: int
    start: datetime
    end: datetime
    status: BookingStatus
    amount_paise: int
    amount_kind: AmountKind
    #: When a pending booking lapses if the host has not decided.
    expires_at: datetime | None
    decided_at: datetime | None
    cancelled_at: datetime | None
    #: "driver", "host" or "admin" once cancelled.
    cancelled_by: str | None
    cancellation_fee_paise: int
    note: str
    created_at: datetime
    #: Whether a keypad PIN has been handed out for this booking (the PIN itself never is
    #: shown again).
    pin_issued: bool


class PinOut(BaseModel):
    """The keypad PIN for an offline unlock: valid on this connector for this booking only,
    from ``valid_from`` (ten minutes early is accepted) until ``valid_until`` — the booking's
    start and end — to start one session; cancelling the booking revokes it."""

    pin: str
    valid_from: datetime
    valid_until: datetime


class BookingWithPin(BookingOut):
    #: Shown once, only to the driver, and only for a booking that costs nothing (a paid
    #: booking's PIN comes from ``POST /bookings/{id}/pin`` once paid); null otherwise, or
    #: when the charger has no PIN secret (yet).
    pin: PinOut | None = None


class BookingExtended(BookingOut):
    #: What the extension added to ``amount_paise`` (the one pricing rule's quote of the
    #: longer window less that of the old one, under the charger's tariff now).
    extra_paise: int
    #: What is left to pay of ``amount_paise``: the top-up, paid with
    #: ``POST /bookings/{id}/payment`` (0 for a free charger).
    topup_paise: int
    #: The charger's agent was told the running session may go on until ``end``
    #: (``extend_session`` command sent); false when no session of the booking runs yet.
    session_extended: bool


class BookingPage(BaseModel):
    items: list[BookingOut]
    limit: int
    offset: int
    #: Pass as ``offset`` for the next page; null on the last page.
    next_offset: int | None
