"""Is the cloud acknowledging? (pure) — for ``sync status`` and ``doctor``.

A broker accepts messages while cloud ingest is down (its PUBACK is not the cloud's ack), so
a link can look "connected" for hours while nothing leaves the outbox and every message is
resent every ``mqtt.ack_timeout_s``. That is a stall: messages have waited longer than
``mqtt.ack_warn_after_s`` **and** nothing at all was acknowledged for that long. A backlog
that drains (acks arriving) is not one, however old its oldest row; nor is a message queued
a moment ago after a quiet hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.tech.checks import Check, Level

NAME = "cloud acks"


@dataclass(frozen=True, slots=True)
class AckFacts:
    #: Outbox rows waiting for the cloud's ack, and how old the oldest is.
    rows: int
    oldest_age_s: float | None
    #: Seconds since the agent last received an ack (since its start if none yet).
    silence_s: float
    warn_after_s: float


def facts_from(
    warn_after_s: float | None,
    answer: Mapping[str, Any] | None,
    rows: int,
    oldest_age_s: float | None,
) -> AckFacts | None:
    """The running agent's ``sync_status`` answer with the store's backlog; None when no
    link is configured (``warn_after_s`` None) or no agent answered."""
    silence = None if answer is None else answer.get("ack_silence_s")
    if warn_after_s is None or not isinstance(silence, int | float):
        return None
    return AckFacts(rows, oldest_age_s, float(silence), warn_after_s)


def stalled(f: AckFacts) -> bool:
    """Messages wait, and the cloud has acknowledged nothing, for longer than the threshold."""
    waited = f.oldest_age_s is not None and f.oldest_age_s >= f.warn_after_s
    return f.rows > 0 and waited and f.silence_s >= f.warn_after_s


def describe(f: AckFacts) -> str:
    return (
        f"nothing acknowledged for {f.silence_s:.0f} s while {f.rows} message(s) wait "
        f"(warn after {f.warn_after_s:.0f} s, mqtt.ack_warn_after_s)"
    )


REMEDY = (
    "the broker takes the messages but cloud ingest does not confirm them: check the cloud's "
    "ingest workers and database; the agent resends until acked, nothing is lost"
)


def check_acks(f: AckFacts) -> Check:
    if stalled(f):
        return Check(NAME, Level.WARN, describe(f), REMEDY)
    if f.rows == 0:
        return Check(NAME, Level.PASS, "nothing waiting for an ack")
    return Check(
        NAME,
        Level.PASS,
        f"{f.rows} message(s) waiting; nothing acknowledged for {f.silence_s:.0f} s",
    )
