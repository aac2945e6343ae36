"""``relay on`` with the agent stopped: the command itself watches the relay it closed.

Beside the running agent a hand-closed relay is watched by the agent
(:mod:`edge_agent.tech.agent_commands`). With the agent stopped nothing else would: a relay
left closed could feed an overcurrent or run on a dead meter until someone remembered it. So
the command stays in the foreground, reads the connector's meter, and applies the same rules
(:func:`edge_agent.relay.manual_close.assess`: the fail-safe's overcurrent and meter-silence
rules plus ``--hold-s``); Ctrl-C, SIGTERM or SIGHUP end the hold. Whatever ends it, the relay is
commanded open before the command returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edge_agent.relay import manual_close
from edge_agent.relay.base import RelayDriver
from edge_agent.relay.check import open_relay
from edge_agent.relay.failsafe import SafetyLimits
from protocols.meters import Quantity

#: How often the meter is read while the relay is held (the agent's safety tick).
POLL_S = 0.5

INTERRUPTED = "interrupted (Ctrl-C, SIGTERM or SIGHUP)"

#: One trusted reading of the connector's meter, or None (no answer, or implausible).
ReadValues = Callable[[], Awaitable[dict[Quantity, float] | None]]


@dataclass(frozen=True, slots=True)
class HoldResult:
    read_closed: bool | None
    open_read: bool | None
    held_s: float
    opened_because: str
    #: A fail-safe rule opened it (overcurrent, meter silence), not the time or the person.
    tripped: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "read_closed": self.read_closed,
            "open_read": self.open_read,
            "held_s": round(self.held_s, 1),
            "opened_because": self.opened_because,
            "tripped": self.tripped,
        }


#: What ends a hold from outside: Ctrl-C, a stop, and the technician's SSH session dropping.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_set(stop: asyncio.Event) -> Iterator[None]:
    """While the block runs (in the running loop, main thread), :data:`STOP_SIGNALS` set
    ``stop`` instead of their defaults; then the defaults come back.

    Why not let Ctrl-C cancel the task, as ``asyncio.run`` does: the cancellation lands
    wherever the task happens to be, and Python 3.11's ``asyncio.wait_for`` (which pymodbus
    awaits every answer with) drops a cancellation that arrives as the answer does -- the
    command then ran on, relay closed, until its own limit (a CI run of
    ``test_relay_guard.py``). A second Ctrl-C would raise KeyboardInterrupt into whatever
    runs, the opening included. An event the command checks between steps has neither
    problem: the first signal ends the closed phase, repeats are ignored until it is safe.
    After the block the loop gives SIGINT back to Python's default (KeyboardInterrupt), not
    to ``asyncio.run``'s handler: a Ctrl-C while the command closes its bus raises there,
    with the relay already open.
    """
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def hold_closed(
    relay: RelayDriver,
    read_values: ReadValues,
    *,
    limits: SafetyLimits,
    hold_s: float,
    poll_s: float = POLL_S,
) -> HoldResult:
    """Close ``relay``, watch it until a rule, the time limit or a signal ends the hold, open it.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP are handled here for the whole hold *and* the opening:
    the first ends the hold, later ones are ignored until the relay is open. Left to their
    defaults, a second Ctrl-C (asyncio raising KeyboardInterrupt into the open), a second
    SIGTERM or a dropped SSH session would kill the process with the relay still closed.
    """
    stop = asyncio.Event()
    with stop_signals_set(stop):
        return await _hold(relay, read_values, stop, limits=limits, hold_s=hold_s, poll_s=poll_s)


async def _hold(
    relay: RelayDriver,
    read_values: ReadValues,
    stop: asyncio.Event,
    *,
    limits: SafetyLimits,
    hold_s: float,
    poll_s: float,
) -> HoldResult:
    started = time.monotonic()
    read_closed: bool | None = None
    why, tripped = INTERRUPTED, False
    opened = False
    try:
        await relay.set_closed(True)
        read_closed = await relay.is_closed()
        manual = manual_close.start(time.monotonic(), hold_s)
        while not stop.is_set():
            values = await read_values()
            now = time.monotonic()
            heard = now if values is not None else manual.heard_mono
            manual, verdict = manual_close.assess(
                manual, mono=now, heard_mono=heard, values=values, limits=limits
            )
            if verdict is not None:
                # The fail-safe rules are checked before the time limit: a verdict before the
                # limit is theirs.
                why, tripped = verdict, now - manual.closed_at < manual.hold_s
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
        await open_relay(relay)
        opened = True
        open_read = await relay.is_closed()
    finally:
        if not opened:  # an error in the bus, the meter or the relay: open, best effort
            await open_relay(relay)
    return HoldResult(read_closed, open_read, time.monotonic() - started, why, tripped)
