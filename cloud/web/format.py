"""How pages write money, times and quantities for people in India (pure functions).

Money is integer paise and becomes ``₹1,23,456.78``: the Indian grouping puts the last three
digits together and every two before them (lakh, crore). Times are shown in IST, 24-hour,
with the date as people in India write it (day first), in the page's language.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_timedelta

IST = ZoneInfo("Asia/Kolkata")


def indian_grouping(whole: int) -> str:
    """``1234567`` → ``12,34,567`` (non-negative integers)."""
    digits = str(whole)
    if len(digits) <= 3:
        return digits
    head, tail = digits[:-3], digits[-3:]
    groups: list[str] = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    if head:
        groups.insert(0, head)
    return ",".join([*groups, tail])


def rupees(paise: int) -> str:
    """``12345678`` paise → ``₹1,23,456.78``; negative amounts keep their sign in front."""
    sign = "-" if paise < 0 else ""
    whole, rest = divmod(abs(paise), 100)
    return f"{sign}₹{indian_grouping(whole)}.{rest:02d}"


def ist(moment: datetime | None, locale: str = "en_IN") -> str:
    """``5 Dec 2026, 14:05`` in IST (day first, 24-hour), month named in ``locale``."""
    if moment is None:
        return "—"
    return format_datetime(moment.astimezone(IST), "d MMM y, HH:mm", locale=locale)


def ist_time(moment: datetime | None, locale: str = "en_IN") -> str:
    """``14:05`` in IST."""
    if moment is None:
        return "—"
    return format_datetime(moment.astimezone(IST), "HH:mm", locale=locale)


def ago(moment: datetime | None, now: datetime, locale: str = "en_IN") -> str:
    """``3 minutes ago`` (``3 मिनट पहले`` in hi_IN): how long before ``now``, rounded the way
    people say it. A moment after ``now`` (the device's clock ahead of ours) reads as a
    second ago rather than "in 2 seconds"."""
    if moment is None:
        return "—"
    before = min(moment - now, timedelta(seconds=-1))
    return format_timedelta(before, add_direction=True, locale=locale)


def kilowatts(power_w: float | None) -> str:
    """``7400`` W → ``7.4 kW`` (one decimal)."""
    if power_w is None:
        return "—"
    return f"{power_w / 1000:.1f} kW"


def kilowatt_hours(energy_wh: int | float | None) -> str:
    """``1234`` Wh → ``1.23 kWh`` (two decimals)."""
    if energy_wh is None:
        return "—"
    return f"{energy_wh / 1000:.2f} kWh"


def elapsed(seconds: float) -> str:
    """``3725`` → ``1:02:05`` (hours:minutes:seconds, never negative)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
