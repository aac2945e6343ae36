"""A relay closed by hand (``relay on``) beside the running agent, and the rules that open it.

The controller's fail-safe watches the relay of a *session*; a technician's close has none,
so without these rules nothing would open it on an overcurrent or a silent meter. While a
connector is closed by hand it is ``Unavailable`` (no session can start under the
technician's hands), and :func:`assess` — the same fail-safe rules
(:func:`edge_agent.relay.failsafe.assess`) plus a bound on time — says when to open it:

* no plausible reading for more than ``meter_silence_s`` → open
* a phase current over ``overcurrent_ratio`` x rating for ``overcurrent_hold_s`` → open
* closed for ``hold_s`` (``relay on --hold-s``, default :data:`DEFAULT_HOLD_S`) → open

Pure: the connector's controller (:mod:`edge_agent.sessions.controller`) feeds it on the
agent's safety tick; the CLI's own hold (:mod:`edge_agent.tech.handhold`) when the agent is
stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge_agent.config import AgentSettings
from edge_agent.relay.failsafe import Observation, SafetyLimits, VerdictKind, Watch, start_watch
from edge_agent.relay.failsafe import assess as assess_failsafe
from protocols.meters import Quantity

#: Long enough to watch an EV start charging, short enough that a forgotten `relay on` ends.
DEFAULT_HOLD_S = 300.0
MAX_HOLD_S = 3600.0


@dataclass(frozen=True, slots=True)
class ManualClose:
    """One hand-closed relay: since when, for how long at most, and the fail-safe's memory."""

    closed_at: float
    hold_s: float
    watch: Watch
    #: The controller's ``last_good_mono`` already fed in (each reading is judged once).
    heard_mono: float


def start(mono: float, hold_s: float) -> ManualClose:
    """A close at ``mono``, held at most ``hold_s`` (clamped to 1 s .. :data:`MAX_HOLD_S`)."""
    return ManualClose(mono, min(max(hold_s, 1.0), MAX_HOLD_S), start_watch(mono), mono)


def assess(
    manual: ManualClose,
    *,
    mono: float,
    heard_mono: float,
    values: dict[Quantity, float] | None,
    limits: SafetyLimits,
) -> tuple[ManualClose, str | None]:
    """Why the relay must open now (None: it may stay closed).

    ``values`` is the connector's latest trusted reading, heard at ``heard_mono``; a reading
    already fed in is not fed again, so silence is measured from the last *new* reading.
    """
    fresh = values if heard_mono > manual.heard_mono else None
    obs = Observation(mono=mono, relay_closed=True, values=fresh, polled=fresh is not None)
    watch, verdict = assess_failsafe(manual.watch, obs, limits)
    manual = replace(manual, watch=watch, heard_mono=max(heard_mono, manual.heard_mono))
    if verdict is not None and verdict.kind is VerdictKind.STOP and verdict.reason is not None:
        return manual, f"{verdict.reason.value}: {verdict.detail}"
    if mono - manual.closed_at >= manual.hold_s:
        return manual, f"closed by hand for its limit of {manual.hold_s:.0f} s"
    return manual, None


_LIMIT_FIELDS = (
    "overcurrent_ratio",
    "overcurrent_hold_s",
    "meter_silence_s",
    "stuck_relay_check_s",
    "stuck_relay_power_w",
    "max_energy_step_wh",
)


def safety_limits(settings: AgentSettings, connector: int) -> SafetyLimits:
    """The connector's fail-safe limits, as the agent gives its controller."""
    site = settings.limits
    return SafetyLimits(
        rating_a=settings.connector(connector).max_current_a,
        **{name: getattr(site, name) for name in _LIMIT_FIELDS},
    )
