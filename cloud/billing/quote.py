"""The one pricing rule: what charging costs under a charger's tariff (pure, integer paise).

Every amount the platform states — a booking's amount, a walk-up quote, a running session's
cost so far and its final bill — is :func:`price` of a :class:`Usage`. An estimate is the
price of the most usage the window allows (:func:`window_usage`), so, the rule being monotone
in every input, an estimate is never below the bill of any session that fits in its window.

Lines, in order (each an integer number of paise):

=================  ==========================================================================
``energy``         per-kWh tariff: ``price_per_kwh * Wh / 1000``, to the nearest paisa, halves up
``time``           per-hour tariff: ``price_per_hour * ms / 3,600,000``, nearest paisa, halves up
``session_fee``    the charger's fee per session, as set
``minimum_charge`` the top-up that raises usage + session fee to the charger's minimum charge
``idle_fee``       ``idle_fee_per_min *`` every minute, started, of the idle time beyond the grace
``cgst``/``sgst``  GST at 18 % (SAC 998714), as CGST 9 % + SGST 9 %, each on the taxable value
                   (the sum of the lines above) to the nearest paisa, halves up
``igst``           instead of CGST + SGST for an inter-state supply: 18 %, nearest, halves up
=================  ==========================================================================

The total is the sum of the lines. Beside the lines, the split of the taxable value between
the host and the platform: ``commission = commission_bp / 10,000 * taxable`` (nearest paisa,
halves up) and ``host_share = taxable - commission``, so the split sums to the taxable value
exactly. GST on the commission, and TCS, depend on the host's registration and are the
ledger's (:mod:`cloud.ledger.entries`).

Why halves up, to the nearest paisa, once per line: a line is a reading of the meter or the
clock times a price, so the nearest paisa has no bias for either side; rounding each line
(not the total) lets the invoice show lines that add up, as CGST Rule 46 invoices must; and
one rule for the estimate and the bill keeps the estimate an upper bound (docs/cloud.md,
"Money"; docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cloud.chargers.models import Charger, PricingMode

#: GST on EV charging: 18 % under SAC 998714 (basis points), split CGST 9 % + SGST 9 %.
GST_RATE_BP = 1800
#: Services Accounting Code of EV charging (AAR Kerala, Chargemod, 2023: a supply of service).
SAC_EV_CHARGING = "998714"
#: The default platform commission on the taxable value (cloud.settings.BillingSettings).
DEFAULT_COMMISSION_BP = 1000
#: An idle grace the charger row does not carry yet (its server default).
DEFAULT_IDLE_GRACE_MIN = 10

_MS_PER_HOUR = 3_600_000
_MS_PER_MIN = 60_000
_BP = 10_000


def div_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` to the nearest integer, halves up (both non-negative)."""
    return (numerator + denominator // 2) // denominator


def _ms(duration: timedelta) -> int:
    # Floor division of timedeltas is exact integer arithmetic (no float seconds).
    return max(0, duration // timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class Tariff:
    """A charger's prices, detached from its row."""

    mode: PricingMode
    price_per_kwh_paise: int
    price_per_hour_paise: int
    session_fee_paise: int
    min_charge_paise: int
    idle_fee_per_min_paise: int = 0
    idle_grace_min: int = DEFAULT_IDLE_GRACE_MIN

    @classmethod
    def from_charger(cls, charger: Charger) -> Tariff:
        grace = charger.idle_grace_min
        return cls(
            mode=charger.pricing_mode,
            price_per_kwh_paise=charger.price_per_kwh_paise,
            price_per_hour_paise=charger.price_per_hour_paise,
            session_fee_paise=charger.session_fee_paise,
            min_charge_paise=charger.min_charge_paise,
            # A row built in Python and not yet flushed has no server defaults.
            idle_fee_per_min_paise=charger.idle_fee_per_min_paise or 0,
            idle_grace_min=DEFAULT_IDLE_GRACE_MIN if grace is None else grace,
        )


@dataclass(frozen=True, slots=True)
class Rates:
    """The platform's rates, in basis points (1 bp = 0.01 %)."""

    commission_bp: int = DEFAULT_COMMISSION_BP
    gst_bp: int = GST_RATE_BP


@dataclass(frozen=True, slots=True)
class Usage:
    """What is priced: charging time, metered energy, and idle time — the bay held beyond
    the booking (the grace period not yet deducted; cloud.payments.settlement.overstay)."""

    duration: timedelta
    energy_wh: int
    idle: timedelta = timedelta(0)


class LineKind(StrEnum):
    ENERGY = "energy"
    TIME = "time"
    SESSION_FEE = "session_fee"
    MINIMUM_CHARGE = "minimum_charge"
    IDLE_FEE = "idle_fee"
    #: A late cancellation's fee kept from the prepayment (:func:`fee_quote`).
    CANCELLATION_FEE = "cancellation_fee"
    CGST = "cgst"
    SGST = "sgst"
    IGST = "igst"


#: The lines that are tax, not taxable value.
TAX_LINES = frozenset({LineKind.CGST, LineKind.SGST, LineKind.IGST})


@dataclass(frozen=True, slots=True)
class Line:
    kind: LineKind
    amount_paise: int
    #: How much was priced, in ``unit`` (Wh, ms, sessions, bp of the taxable value).
    quantity: int
    unit: str


@dataclass(frozen=True, slots=True)
class Quote:
    """A priced :class:`Usage`. ``total_paise`` is the sum of ``lines``; ``taxable_paise`` the
    sum of the non-tax lines; ``host_share_paise + commission_paise == taxable_paise``."""

    lines: tuple[Line, ...]
    taxable_paise: int
    gst_paise: int
    total_paise: int
    commission_paise: int
    host_share_paise: int

    def line(self, kind: LineKind) -> int:
        """The amount of the ``kind`` line (0 when the quote has none)."""
        return sum(line.amount_paise for line in self.lines if line.kind is kind)


def usage_paise(tariff: Tariff, usage: Usage) -> Line:
    """The energy or time line."""
    if tariff.mode is PricingMode.PER_HOUR:
        ms = _ms(usage.duration)
        amount = div_half_up(tariff.price_per_hour_paise * ms, _MS_PER_HOUR)
        return Line(LineKind.TIME, amount, ms, "ms")
    wh = max(0, usage.energy_wh)
    return Line(LineKind.ENERGY, div_half_up(tariff.price_per_kwh_paise * wh, 1000), wh, "Wh")


def idle_line(tariff: Tariff, idle: timedelta) -> Line:
    """The idle (overstay) fee: ``idle_fee_per_min`` for every started minute of the idle
    time beyond the grace (a bay is held by the minute, as a car park bills it; an exact
    multiple of the rate, so there is nothing to round)."""
    billable_ms = max(0, _ms(idle) - tariff.idle_grace_min * _MS_PER_MIN)
    minutes = -(-billable_ms // _MS_PER_MIN)
    return Line(LineKind.IDLE_FEE, tariff.idle_fee_per_min_paise * minutes, minutes, "min")


def price(
    tariff: Tariff, usage: Usage, rates: Rates = Rates(), *, interstate: bool = False
) -> Quote:
    """The bill of ``usage`` under ``tariff`` (the module docstring states each line's rule).

    ``interstate``: GST as IGST instead of CGST + SGST (a supply whose place of supply is in
    another state than the supplier's; docs/decisions.md).
    """
    charge = usage_paise(tariff, usage)
    lines = [charge]
    if tariff.session_fee_paise:
        lines.append(Line(LineKind.SESSION_FEE, tariff.session_fee_paise, 1, "session"))
    top_up = tariff.min_charge_paise - charge.amount_paise - tariff.session_fee_paise
    if top_up > 0:
        lines.append(Line(LineKind.MINIMUM_CHARGE, top_up, tariff.min_charge_paise, "paise"))
    idle = idle_line(tariff, usage.idle)
    if idle.amount_paise:
        lines.append(idle)
    return _taxed(lines, rates, interstate=interstate)


def _taxed(lines: list[Line], rates: Rates, *, interstate: bool) -> Quote:
    """``lines`` (the taxable value) with their GST lines and the commission split."""
    lines = list(lines)
    taxable = sum(line.amount_paise for line in lines)
    if interstate:
        lines.append(Line(LineKind.IGST, _share(taxable, rates.gst_bp), rates.gst_bp, "bp"))
    else:
        half_bp = rates.gst_bp // 2
        # Each half rounded on its own, as the invoice prints them (so they add up there).
        lines.append(Line(LineKind.CGST, _share(taxable, half_bp), half_bp, "bp"))
        lines.append(Line(LineKind.SGST, _share(taxable, rates.gst_bp - half_bp), half_bp, "bp"))
    gst = sum(line.amount_paise for line in lines if line.kind in TAX_LINES)
    commission = _share(taxable, rates.commission_bp)
    return Quote(
        lines=tuple(lines),
        taxable_paise=taxable,
        gst_paise=gst,
        total_paise=taxable + gst,
        commission_paise=commission,
        host_share_paise=taxable - commission,
    )


def fee_quote(kept_paise: int, rates: Rates = Rates(), *, interstate: bool = False) -> Quote:
    """The bill of a late cancellation's fee: ``kept_paise`` (GST included, as every amount
    a driver sees) as one ``cancellation_fee`` line, its GST by the rule of :func:`price`.

    The taxable value is the largest whose priced total is at most ``kept_paise``. GST
    rounded per line cannot reach every total (with CGST + SGST, a taxable 5 costs 5 and 6
    costs 8: 6 and 7 are never totals), so the quote's total may fall a paisa or two short
    of ``kept_paise``; the caller keeps only the total and refunds the rest. A cancellation
    fee is consideration for the charging it was booked for (CBIC Circular 178/10/2022-GST),
    so it is taxed like it, under the same SAC.
    """
    if type(kept_paise) is not int or kept_paise < 0:
        raise ValueError(f"a kept fee is a non-negative int of paise, not {kept_paise!r}")

    def quoted(taxable: int) -> Quote:
        fee = Line(LineKind.CANCELLATION_FEE, taxable, 1, "booking")
        return _taxed([fee] if taxable else [], rates, interstate=interstate)

    # The total is strictly increasing in the taxable value: start just below and step up.
    taxable = kept_paise * _BP // (_BP + rates.gst_bp)
    while taxable > 0 and quoted(taxable).total_paise > kept_paise:
        taxable -= 1
    while quoted(taxable + 1).total_paise <= kept_paise:
        taxable += 1
    return quoted(taxable)


def _share(amount_paise: int, rate_bp: int) -> int:
    return div_half_up(amount_paise * rate_bp, _BP)


def max_energy_wh(duration: timedelta, max_power_w: int) -> int:
    """The most energy, in whole Wh rounded up, a connector of ``max_power_w`` delivers in
    ``duration``: no meter reading of a session that long can exceed it."""
    return -(-max(0, max_power_w) * _ms(duration) // _MS_PER_HOUR)


def window_usage(duration: timedelta, max_power_w: int) -> Usage:
    """The most usage a window of ``duration`` allows: the whole window, at full power.

    Per hour that is exact; per kWh an upper bound. Idle time is not in it: an idle fee
    arises only after charging, beyond the window's prepayment (issue 16, overstay)."""
    return Usage(duration=duration, energy_wh=max_energy_wh(duration, max_power_w))


def is_upper_bound(tariff: Tariff) -> bool:
    """Whether an estimate under ``tariff`` is a ceiling (per kWh) rather than exact."""
    return tariff.mode is PricingMode.PER_KWH


def session_usage(
    *,
    energy_wh: int,
    started_at: datetime | None,
    until: datetime,
    booked_until: datetime | None = None,
    elapsed: timedelta | None = None,
) -> Usage:
    """A session's usage up to ``until`` (its stop, or now while it runs); a session not yet
    started has used nothing but its place (its fee). ``booked_until``: the end of the
    session's booking, when it has one: the time from there to ``until`` is its idle time
    (:func:`overstay`). ``elapsed``: the agent's monotonic measure of a stopped session
    (:mod:`cloud.sessions.elapsed`), billed instead of ``until - started_at``, and its stop
    taken as ``started_at + elapsed`` for the overstay: a wall clock stepped during the
    session changes neither."""
    if started_at is not None and elapsed is not None:
        until = started_at + elapsed
    duration = timedelta(0) if started_at is None else until - started_at
    return Usage(duration=duration, energy_wh=energy_wh, idle=overstay(until, booked_until))


def overstay(stopped_at: datetime, booked_until: datetime | None) -> timedelta:
    """How long a session held its bay beyond its booking: from the booking's end to the
    session's stop (none for a walk-up, which books no time). The agent reports no idle
    time (a car plugged in, not drawing), so the overstay is what the cloud knows for sure:
    the booked slot was over and the bay still held. The grace comes off in
    :func:`idle_line` (docs/decisions.md, "overstay")."""
    if booked_until is None:
        return timedelta(0)
    return max(timedelta(0), stopped_at - booked_until)


def cost_so_far_paise(
    tariff: Tariff, *, energy_wh: int, started_at: datetime | None, until: datetime
) -> int:
    """What a session costs the driver up to ``until``, GST included: shown live and in
    ``GET /sessions/{id}`` until the session is billed. Idle fees arise after charging and
    are not in it."""
    usage = session_usage(energy_wh=energy_wh, started_at=started_at, until=until)
    return price(tariff, usage).total_paise
