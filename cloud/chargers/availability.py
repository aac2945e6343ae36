"""When a charger is open: its weekly schedule (local time) minus its blocked periods (UTC).

For other features (bookings, sessions), the interface is::

    from cloud.chargers.availability import load_schedule, closed_reason, is_open

    schedule = await load_schedule(db, charger_id, start=start, end=end)
    reason = closed_reason(schedule, start, end)   # None when open for all of [start, end)
    is_open(schedule, start, end)                  # the same as a bool

* ``load_schedule(db: AsyncSession, charger_id: str, *, start: datetime, end: datetime)
  -> Schedule`` reads the charger's time zone, weekly windows and the blocked periods that
  overlap ``[start, end)``; :class:`~cloud.errors.NotFound` if the charger does not exist.
  ``start``/``end`` must be timezone-aware.
* ``closed_reason(schedule, start, end) -> str | None`` and ``is_open(...) -> bool`` are pure:
  ``[start, end)`` is open when every instant of it lies inside the union of the weekly
  windows (windows that touch, also across midnight, join up) and it overlaps no blocked
  period. An empty range is refused (``ValueError``), as is a naive datetime.

Connector state (Faulted, offline) and other bookings are not part of this answer: the
booking's own exclusion constraint covers overlap, and the live state is the unlock's business.

A weekly window is ``weekday`` (0 = Monday) with ``opens_at < closes_at`` in the charger's
local time; ``closes_at == time.max`` (shown as ``"24:00"`` by the API) means "until midnight".
Local times are turned into instants with :mod:`zoneinfo`, so a zone with DST would work too
(India has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.chargers.models import AvailabilityWindow, BlockedPeriod, Charger
from cloud.errors import NotFound

#: ``closes_at`` meaning "until the end of the day" (the API shows and accepts ``24:00``).
END_OF_DAY = time.max


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """Open on ``weekday`` (0 = Monday) from ``opens_at`` to ``closes_at``, local time."""

    weekday: int
    opens_at: time
    closes_at: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday {self.weekday} is not in 0..6")
        if not self.opens_at < self.closes_at:
            raise ValueError("a window must open before it closes")


@dataclass(frozen=True, slots=True)
class Blocked:
    """A closed period ``[start, end)`` (UTC instants) and the host's reason."""

    start: datetime
    end: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Everything :func:`closed_reason` needs, loaded once."""

    timezone: ZoneInfo
    windows: tuple[WeeklyWindow, ...]
    blocked: tuple[Blocked, ...] = ()


ALWAYS_OPEN = tuple(WeeklyWindow(day, time(0), END_OF_DAY) for day in range(7))


def _local_instant(day: date, moment: time, zone: ZoneInfo) -> datetime:
    if moment == END_OF_DAY:
        return datetime.combine(day + timedelta(days=1), time(0), zone)
    return datetime.combine(day, moment, zone)


def open_intervals(
    schedule: Schedule, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The weekly windows around ``[start, end)`` as merged, sorted UTC intervals."""
    zone = schedule.timezone
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    concrete: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        for window in schedule.windows:
            if window.weekday == day.weekday():
                concrete.append(
                    (
                        _local_instant(day, window.opens_at, zone).astimezone(UTC),
                        _local_instant(day, window.closes_at, zone).astimezone(UTC),
                    )
                )
        day += timedelta(days=1)
    return _merge(concrete)


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def closed_reason(schedule: Schedule, start: datetime, end: datetime) -> str | None:
    """Why the charger is not open for all of ``[start, end)``, or None when it is."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if not start < end:
        raise ValueError("start must be before end")
    for blocked in schedule.blocked:
        if blocked.start < end and start < blocked.end:
            return "blocked by the host" + (f": {blocked.reason}" if blocked.reason else "")
    covered = any(lo <= start and end <= hi for lo, hi in open_intervals(schedule, start, end))
    return None if covered else "outside the charger's opening hours"


def is_open(schedule: Schedule, start: datetime, end: datetime) -> bool:
    """True when the charger is open for every instant of ``[start, end)``."""
    return closed_reason(schedule, start, end) is None


def windows_from_rows(rows: Sequence[AvailabilityWindow]) -> tuple[WeeklyWindow, ...]:
    return tuple(
        WeeklyWindow(r.weekday, r.opens_at, r.closes_at)
        for r in sorted(rows, key=lambda r: (r.weekday, r.opens_at))
    )


async def load_schedule(
    db: AsyncSession, charger_id: str, *, start: datetime, end: datetime
) -> Schedule:
    """The charger's schedule with the blocked periods overlapping ``[start, end)``."""
    zone_name = await db.scalar(select(Charger.timezone).where(Charger.id == charger_id))
    if zone_name is None:
        raise NotFound("charger", charger_id)
    windows = (
        await db.scalars(
            select(AvailabilityWindow).where(AvailabilityWindow.charger_id == charger_id)
        )
    ).all()
    blocked_rows = (
        await db.scalars(
            select(BlockedPeriod).where(
                BlockedPeriod.charger_id == charger_id,
                BlockedPeriod.period.overlaps(Range(start, end, bounds="[)")),
            )
        )
    ).all()
    # An unbounded side of a stored range (never written by the API) reaches past the window.
    blocked = tuple(
        Blocked(
            r.period.lower or start - timedelta(days=1),
            r.period.upper or end + timedelta(days=1),
            r.reason,
        )
        for r in blocked_rows
    )
    return Schedule(ZoneInfo(zone_name), windows_from_rows(windows), blocked)
