"""systemd's watchdog, fed by the agent's own health: ``WATCHDOG=1`` is sent only while the
event loop runs (the task that sends it is on it) and every meter's poll loop, the safety tick
and the store writer have made progress recently. A loop that hangs starves the watchdog and systemd
restarts the agent (``WatchdogSec=``, ``Restart=always`` in
``deploy/edge/chargemitra-agent.service``); a bare timer would pet a hung agent forever.

What counts as progress, and why:

* a meter: a poll *finished*, answered or not (``MeterHealthCounters.last_poll_mono``). A
  silent meter is a field fault the fail-safe rules handle (the relay opens); restarting the
  agent would not make it answer, so it does not stop the watchdog. A poll that never
  returns (a bus stuck behind its lock) does.
* the store writer: readings waiting with no commit (:meth:`StoreWriter.stalled_s
  <edge_agent.store.writer.StoreWriter.stalled_s>`). An idle writer is healthy; one
  retrying a store another process has locked is alive and keeps its readings in memory
  on purpose — for ``[store] locked_max_s`` (default 300 s), not forever: a lock nobody
  releases is a fault systemd should see; one stuck in an fsync is not alive.
* the safety tick (:func:`edge_agent.safety.safety_loop`): a tick *finished*
  (``TickLateness.last_done_mono``). It runs the fail-safe rules that open a relay; a hung
  controller must not be hidden by healthy meters. Its limit is the watchdog timeout, plus
  a tick, plus the worst bus round (a relay driven over Modbus waits for its bus).

A meter may go without a finished poll for the watchdog timeout, plus its interval, plus
the worst a round of its bus can take (every block of every meter timing out on every
retry): only a loop that is really stuck misses that. ``STATUS=`` tells ``systemctl
status`` what the watchdog saw, sent when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edge_agent.meters.poller import MeterPoller
from edge_agent.safety import SAFETY_TICK_S, TickLateness
from edge_agent.sdnotify import notify
from edge_agent.store.writer import StoreWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stall:
    """A loop that made no progress for longer than it may."""

    what: str
    idle_s: float
    limit_s: float

    def __str__(self) -> str:
        return f"{self.what} made no progress for {self.idle_s:.0f} s (limit {self.limit_s:.0f} s)"


def bus_round_s(pollers: Iterable[MeterPoller]) -> float:
    """The longest one round of a bus can take: every block of every meter on it timing out
    on every try, with the frame gap before each."""
    total = 0.0
    for poller in pollers:
        timing = poller.bus.timing
        per_try = timing.timeout_s + timing.frame_gap_s
        total += len(poller.blocks) * per_try * (timing.retries + 1)
    return total


class AgentHealth:
    """Decides whether the agent may pet the watchdog (pure over the parts' counters)."""

    def __init__(
        self,
        pollers: Sequence[MeterPoller],
        writer: StoreWriter,
        *,
        timeout_s: float,
        ticks: TickLateness | None = None,
        locked_max_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pollers = list(pollers)
        self._writer = writer
        self._timeout_s = timeout_s
        self._ticks = ticks
        self._locked_max_s = locked_max_s
        self._monotonic = monotonic
        #: Before its first finished poll a meter counts from here (start-up).
        self._since = monotonic()
        by_bus: dict[str, list[MeterPoller]] = {}
        for poller in self._pollers:
            by_bus.setdefault(poller.settings.link.bus_key, []).append(poller)
        self._limit_s = {
            p.meter_id: timeout_s + p.settings.poll_interval_s + bus_round_s(pollers_on_bus)
            for key, pollers_on_bus in by_bus.items()
            for p in pollers_on_bus
        }
        worst_round = max((bus_round_s(ps) for ps in by_bus.values()), default=0.0)
        self._tick_limit_s = timeout_s + SAFETY_TICK_S + worst_round

    def stalls(self) -> list[Stall]:
        """Every loop that is stuck now; empty when the agent is healthy."""
        now = self._monotonic()
        found: list[Stall] = []
        for poller in self._pollers:
            last = poller.health.last_poll_mono
            idle = now - (self._since if last is None else max(last, self._since))
            limit = self._limit_s[poller.meter_id]
            if idle > limit:
                found.append(Stall(f"meter {poller.meter_id}'s poll loop", idle, limit))
        if self._ticks is not None:
            last = self._ticks.last_done_mono
            idle = now - (self._since if last is None else max(last, self._since))
            if idle > self._tick_limit_s:
                found.append(Stall("the safety tick", idle, self._tick_limit_s))
        waiting = self._writer.stalled_s(now)
        if waiting > self._timeout_s:
            found.append(Stall("the store writer", waiting, self._timeout_s))
        locked = self._writer.locked_s(now)
        if locked > self._locked_max_s:
            found.append(
                Stall(
                    "the store writer (store locked by another process)", locked, self._locked_max_s
                )
            )
        return found

    def summary(self) -> str:
        """The healthy ``STATUS=`` line (stable: sent once, not at every pet)."""
        tick = ", the safety tick" if self._ticks is not None else ""
        return (
            f"healthy: {len(self._pollers)} meter poll loop(s){tick} and the store writer "
            "progressing"
        )


async def watchdog_loop(health: AgentHealth, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s`` (half ``WatchdogSec``) until ``stop``: ``WATCHDOG=1`` if healthy;
    ``STATUS=`` when it turns healthy or stalled; a stall logged at ERROR once."""
    status_sent = ""
    while not stop.is_set():
        stalls = health.stalls()
        if stalls:
            status = "stalled: " + "; ".join(str(s) for s in stalls)
            if not status_sent.startswith("stalled"):
                log.error("not feeding systemd's watchdog: %s", status)
        else:
            notify("WATCHDOG=1")
            status = health.summary()
            if status_sent.startswith("stalled"):
                log.info("every loop progresses again: feeding systemd's watchdog")
        # Only on a change of state: the idle seconds in a stall's text grow every beat.
        if status.split(":")[0] != status_sent.split(":", maxsplit=1)[0]:
            notify(f"STATUS={status}")
        status_sent = status
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
