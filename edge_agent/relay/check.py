"""The relay test: close, confirm power on the meter, open, confirm it stops.

:func:`judge` is the pure verdict; :func:`run_relay_test` drives any
:class:`~edge_agent.relay.base.RelayDriver` with a meter reader. It is the one relay test:
the agent runs it for ``relay_check`` and ``relay_test`` on the control socket and for the
cloud's relay-test command (:meth:`edge_agent.sessions.controller.ConnectorController.test_relay`),
the CLI on the bus when the agent is stopped. Without a meter reader (``relay_test``: the
cloud's quick check) only the read-backs are judged. The relay is always commanded open
again, whatever happens in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from edge_agent.backoff import Backoff, Retries
from edge_agent.errors import Interrupted, RelayError
from edge_agent.relay.base import RelayDriver

PowerReader = Callable[[], Awaitable[float | None]]


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 -- a verdict, not a password
    #: Closed, but no power drawn: nothing plugged in, or the contactor does not close.
    NO_POWER = "no_power"
    #: Power still flows after opening: welded contacts.
    STUCK_CLOSED = "stuck_closed"
    #: The relay reads back the opposite of what it was told.
    NO_READBACK = "no_readback"
    METER_SILENT = "meter_silent"


@dataclass(frozen=True, slots=True)
class RelayTestResult:
    verdict: Verdict
    detail: str
    closed_read: bool | None
    open_read: bool | None
    power_closed_w: float | None
    power_open_w: float | None

    @property
    def failed(self) -> bool:
        return self.verdict not in (Verdict.PASS, Verdict.NO_POWER)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def judge_read_back(*, closed_read: bool | None, open_read: bool | None) -> tuple[Verdict, str]:
    """The verdict of the read-backs alone (a relay that cannot be read back passes)."""
    if closed_read is False:
        return Verdict.NO_READBACK, "the relay reads open after the close command"
    if open_read is True:
        return Verdict.NO_READBACK, "the relay reads closed after the open command"
    return Verdict.PASS, "closed and opened (read back only; power not watched)"


def judge(
    *,
    closed_read: bool | None,
    open_read: bool | None,
    power_closed_w: float | None,
    power_open_w: float | None,
    charging_power_w: float,
    stuck_power_w: float,
) -> tuple[Verdict, str]:
    """The verdict of a test from what was read back and measured."""
    read_back = judge_read_back(closed_read=closed_read, open_read=open_read)
    if read_back[0] is not Verdict.PASS:
        return read_back
    if power_open_w is not None and power_open_w > stuck_power_w:
        return (
            Verdict.STUCK_CLOSED,
            f"{power_open_w:.0f} W still flows after opening: the contactor is stuck closed",
        )
    if power_closed_w is None or power_open_w is None:
        return Verdict.METER_SILENT, "the meter did not answer during the test"
    if power_closed_w < charging_power_w:
        return (
            Verdict.NO_POWER,
            (
                f"closed, but only {power_closed_w:.0f} W flowed: is an EV plugged in and "
                "asking for charge? if so the contactor does not close (check its coil supply)"
            ),
        )
    return (
        Verdict.PASS,
        f"closed: {power_closed_w:.0f} W flowed; opened: {power_open_w:.0f} W",
    )


async def _watch(
    read: PowerReader, done: Callable[[float], bool], settle_s: float, stop: asyncio.Event
) -> float | None:
    """Read power until ``done`` says so, ``settle_s`` passes or ``stop`` is set; the last
    value read."""
    deadline = time.monotonic() + settle_s
    last: float | None = None
    while not stop.is_set():
        power = await read()
        if power is not None:
            last = power
            if done(power):
                return last
        if time.monotonic() >= deadline:
            return last
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return last


#: Attempts to open before giving up: one garbled frame on RS-485 must not leave it closed.
OPEN_ATTEMPTS = 3
#: Between them: 0.1-0.2 s, then 0.2-0.4 s (a line busy with another master's frame clears).
OPEN_RETRY = Backoff(initial_s=0.2, max_s=0.4)


async def open_relay(relay: RelayDriver) -> None:
    """Command ``relay`` open, retrying a failed command; the last error if all fail."""
    retries = Retries(OPEN_RETRY)
    while True:
        try:
            await relay.set_closed(False)
            return
        except RelayError:
            if retries.failures + 1 >= OPEN_ATTEMPTS:
                raise
            await asyncio.sleep(retries.failed())


async def run_relay_test(
    relay: RelayDriver,
    read_power: PowerReader | None,
    *,
    charging_power_w: float,
    stuck_power_w: float,
    settle_s: float,
    stop: asyncio.Event | None = None,
) -> RelayTestResult:
    """Close, watch for power, open, watch it stop (each watch at most ``settle_s``);
    ``read_power`` None: close, read back, open, read back.

    The relay is commanded open whatever ends the closed phase: an error, a cancellation,
    or ``stop`` (the field CLI sets it on Ctrl-C, SIGTERM or SIGHUP:
    :func:`edge_agent.tech.handhold.stop_signals_set` says why not a cancellation), after
    which the test ends with :class:`~edge_agent.errors.Interrupted` instead of a verdict.
    """
    if stop is None:
        stop = asyncio.Event()  # never set: the agent's own tests end by their limits
    power_closed = power_open = None
    try:
        await relay.set_closed(True)
        closed_read = await relay.is_closed()
        if read_power is not None:
            power_closed = await _watch(read_power, lambda p: p >= charging_power_w, settle_s, stop)
    finally:
        await open_relay(relay)
    open_read = await relay.is_closed()
    if read_power is not None and not stop.is_set():
        power_open = await _watch(read_power, lambda p: p <= stuck_power_w, settle_s, stop)
    if stop.is_set():
        # Either watch cut short: judging what it saw would name a fault it did not find
        # (a meter "silent" before its first read, power "stuck" while still falling).
        reads = {True: "reads closed", False: "reads open", None: "cannot be read back"}
        raise Interrupted(
            f"relay test interrupted: the relay was commanded open and {reads[open_read]}"
        )
    if read_power is None:
        verdict, detail = judge_read_back(closed_read=closed_read, open_read=open_read)
    else:
        verdict, detail = judge(
            closed_read=closed_read,
            open_read=open_read,
            power_closed_w=power_closed,
            power_open_w=power_open,
            charging_power_w=charging_power_w,
            stuck_power_w=stuck_power_w,
        )
    return RelayTestResult(verdict, detail, closed_read, open_read, power_closed, power_open)
