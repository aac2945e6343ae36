"""What the admin console's user and figures routes take and answer."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field, field_validator

from cloud.accounts.models import KycStatus, Role
from cloud.schemas import NOT_BLANK_PATTERN, RequestModel


class AdminUserOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    name: str
    roles: list[Role]
    disabled_at: datetime | None
    created_at: datetime
    host_id: str | None
    kyc_status: KycStatus | None


class AdminUserList(BaseModel):
    items: list[AdminUserOut]
    limit: int
    offset: int


class DisableIn(RequestModel):
    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK_PATTERN)


class RolesIn(RequestModel):
    """The account's roles from now on (all of them: roles not listed are taken away)."""

    roles: list[Role] = Field(min_length=1, max_length=4, json_schema_extra={"uniqueItems": True})

    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("each role once")
        return roles


class DayFiguresOut(BaseModel):
    day: date
    sessions: int
    energy_wh: int
    energy_kwh: float
    revenue_paise: int
    commission_paise: int
    gst_paise: int


class ChargerFiguresOut(BaseModel):
    charger_id: str
    name: str
    city: str
    connectors: int
    sessions: int
    energy_wh: int
    charging_hours: float
    available_hours: float
    utilisation: float | None
    online_ratio: float | None


class CityFiguresOut(BaseModel):
    city: str
    sessions: int
    energy_wh: int
    revenue_paise: int


class FigureTotals(BaseModel):
    sessions: int
    energy_wh: int
    energy_kwh: float
    revenue_paise: int
    commission_paise: int
    gst_paise: int


class PlatformFigures(BaseModel):
    """The platform's figures of the days ``from`` to ``to`` (inclusive, India time)."""

    from_date: date
    to_date: date
    timezone: str
    totals: FigureTotals
    days: list[DayFiguresOut]
    chargers: list[ChargerFiguresOut]
    top_cities: list[CityFiguresOut]
    #: Of every charger with a device: the share of 15-minute intervals it reported in.
    online_ratio: float | None
