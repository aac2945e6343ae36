"""Requests and answers of the session routes (unlock, stop, read) and the live stream."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from cloud.schemas import RequestModel, WholeNumber


class UnlockRequestBody(RequestModel):
    #: The connector number as printed on the charger (the device's wire number).
    connector: WholeNumber = Field(ge=1, le=32)
    #: The driver's confirmed booking; omitted for pay-as-you-go.
    booking_id: str | None = Field(default=None, min_length=1, max_length=26)


class UnlockStarted(BaseModel):
    """201: the agent accepted the token and closed the relay."""

    outcome: Literal["started"] = "started"
    unlock_id: str
    #: The session's id in this API (the agent's session ULID): GET /sessions/{id}.
    session_id: str
    charger_id: str
    connector: int
    booking_id: str | None
    agent_status: str | None


class UnlockOffline(BaseModel):
    """202: the charger is offline; type ``pin`` then ``#`` on its keypad within the window."""

    outcome: Literal["offline"] = "offline"
    unlock_id: str
    charger_id: str
    connector: int
    booking_id: str
    pin: str
    pin_valid_from: datetime
    pin_valid_until: datetime


class StopAccepted(BaseModel):
    """202: the agent opened the relay; the session row closes when its stop event arrives."""

    session_id: str
    cmd_id: str
    state: Literal["stopping", "stopped"]


class SessionOut(BaseModel):
    #: The agent's session ULID (also the live channel key).
    id: str
    unlock_id: str | None
    user_id: str | None
    charger_id: str | None
    device_id: str
    connector: int
    booking_id: str | None
    #: ``starting`` (the API knows the unlock, no event arrived yet), ``active``, ``stopped``.
    state: Literal["starting", "active", "stopped"]
    started_at: datetime | None
    stopped_at: datetime | None
    meter_start_wh: int | None
    meter_stop_wh: int | None
    energy_wh: int
    power_w: float | None
    stop_reason: str | None
    #: True when any of the session's events happened while the charger was offline.
    offline: bool
    #: Billed amount once priced; otherwise the running estimate from the charger's pricing.
    cost_paise: int
    cost_final: bool


class SessionList(BaseModel):
    items: list[SessionOut]
    limit: int
    offset: int
