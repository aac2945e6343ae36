"""Crash recovery, pure: what to do with a session found open in the store at start.

The relay has already been opened (the composition root does that before anything else), so
power is off whatever this decides. Rules:

* ``resume`` configured, the meter answers now, and the session's authorization has not
  expired (judged only with a synchronised clock; an id tag without expiry needs none)
  → resume it (the relay closes again).
* otherwise → close it with reason PowerLoss, billing up to the live register value if the
  meter answers, else the last value stored with the readings (at most one batch old).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from edge_agent.sessions.machine import Session


@dataclass(frozen=True, slots=True)
class Resume:
    session: Session


@dataclass(frozen=True, slots=True)
class Close:
    session: Session
    meter_wh: int
    #: "live" when read from the meter now, "stored" when taken from the store.
    source: Literal["live", "stored"]


def plan_recovery(
    session: Session,
    *,
    mode: Literal["close", "resume"],
    live_meter_wh: int | None,
    now: datetime,
    clock_synced: bool,
) -> Resume | Close:
    authorization_valid = session.auth_expires_at is None or (
        clock_synced and now < session.auth_expires_at
    )
    if mode == "resume" and live_meter_wh is not None and authorization_valid:
        return Resume(session)
    if live_meter_wh is not None:
        return Close(session, live_meter_wh, "live")
    return Close(session, session.meter_wh, "stored")
