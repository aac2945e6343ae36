"""One meter: read its register map in the fewest frames, decode, track availability.

The map and the block plan come from :mod:`protocols.meters` (data, not code) or from the
site's own map file (``map_file``), restricted to the configured ``quantities``. A poll either
yields a :class:`~protocols.messages.MeterReading` or counts a failure by kind; it never
raises for what a meter does. Availability is logged once at ERROR when the meter stops
answering and once at INFO when it is back, never once per poll (a flapping RS-485 line
would flood the journal).

A block the meter refuses (:mod:`edge_agent.meters.blocks`) is remembered: its quantities are
unavailable for this meter, the rest of the reading flows, and the block is asked again only
every :data:`~edge_agent.meters.blocks.REFUSED_BLOCK_RETRY_S` seconds. ``status`` and
``doctor`` name it (:meth:`MeterPoller.unavailable_blocks`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.config import MeterSettings, register_map_of
from edge_agent.errors import BusError
from edge_agent.meters.blocks import REFUSED_BLOCK_RETRY_S, RefusedBlock, read_blocks
from edge_agent.meters.bus import ModbusBus
from protocols.errors import DecodeError
from protocols.messages import MeterHealth, MeterReading
from protocols.meters import Block, RegisterMap, decode_blocks, plan_blocks

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class MeterHealthCounters:
    """What a technician asks about a meter: polls, failures by kind, availability."""

    polls: int = 0
    good: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    available: bool | None = None
    last_error: str = ""
    #: Failed polls since the last good one (what tells a dying meter from a flaky line).
    consecutive: int = 0
    #: Monotonic time of the last good reading (None until the meter first answers).
    last_good_mono: float | None = None
    #: Monotonic time the last poll finished, answered or not: the bus loop is turning
    #: (systemd's watchdog is fed only while it does, :mod:`edge_agent.watchdog`).
    last_poll_mono: float | None = None

    @property
    def errors(self) -> int:
        return sum(self.failures.values())


class MeterPoller:
    """Polls one meter on a :class:`ModbusBus` it shares with the other devices of the line."""

    def __init__(
        self,
        settings: MeterSettings,
        bus: ModbusBus,
        *,
        clock: Callable[[], datetime] = utc_now,
        clock_synced: Callable[[], bool] = lambda: True,
        register_map: RegisterMap | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        block_retry_s: float = REFUSED_BLOCK_RETRY_S,
    ) -> None:
        self.settings = settings
        self.meter_id = settings.id
        self.bus = bus
        self.register_map: RegisterMap = register_map or register_map_of(settings)
        self.blocks: tuple[Block, ...] = plan_blocks(
            self.register_map, quantities=settings.quantities
        )
        self.health = MeterHealthCounters()
        self._clock = clock
        self._clock_synced = clock_synced
        self._monotonic = monotonic
        self._block_retry_s = block_retry_s
        self._refused: dict[Block, RefusedBlock] = {}

    def unavailable_blocks(self) -> list[RefusedBlock]:
        """The blocks this meter refused, in address order (their quantities are not read)."""
        return [self._refused[b] for b in self.blocks if b in self._refused]

    def unavailable_report(self) -> list[dict[str, Any]]:
        """:meth:`unavailable_blocks` as JSON (block, quantities, code, since, retry_in_s)."""
        now = self._monotonic()
        return [b.to_json(now) for b in self.unavailable_blocks()]

    def _due(self, now: float) -> list[Block]:
        return [
            b for b in self.blocks if b not in self._refused or self._refused[b].retry_at <= now
        ]

    def snapshot(self) -> MeterHealth:
        """This meter's health as the status message reports it: the one place that turns
        the poller's counters into the wire's :class:`MeterHealth`."""
        last = self.health.last_good_mono
        return MeterHealth(
            meter_id=self.meter_id,
            model=self.settings.model[:32],
            available=self.health.available is True,
            errors=self.health.errors,
            consecutive_errors=self.health.consecutive,
            last_error=self.health.last_error[:120] or None,
            last_reading_age_s=None if last is None else max(0.0, self._monotonic() - last),
            unavailable_blocks=[b.label for b in self.unavailable_blocks()],
        )

    async def poll(self) -> MeterReading | None:
        """Read every block due; None (and a counted failure) if the read fails.

        A block refused while another answered costs its own quantities only; a meter that
        refuses every block is a failed read (``exception``), as a wrong model or unit is.
        """
        try:
            return await self._poll()
        finally:
            self.health.last_poll_mono = self._monotonic()

    async def _poll(self) -> MeterReading | None:
        self.health.polls += 1
        now = self._monotonic()
        try:
            read = await read_blocks(self.bus, self.settings.unit_id, self._due(now))
            values = decode_blocks(self.register_map, read.answers)
        except BusError as exc:
            self._failed(exc.kind, str(exc))
            return None
        except DecodeError as exc:
            self._failed("garbage", str(exc))
            return None
        if not read.answers and read.refused:
            # Nothing answered: not a partial map but the wrong device, model or unit id.
            # Forget what was refused so every block is asked again on the next poll.
            self._refused.clear()
            self._failed("exception", str(read.refused[-1][1]))
            return None
        self._note_blocks(read.answers, read.refused, now)
        if not values:
            self._failed("garbage", "no quantity decoded")
            return None
        self.health.good += 1
        self.health.consecutive = 0
        self.health.last_good_mono = self._monotonic()
        if self.health.available is not True:
            if self.health.available is False:
                log.info("meter %s is answering again", self.meter_id)
            self.health.available = True
        return MeterReading(
            meter_id=self.meter_id,
            ts=self._clock(),
            clock_synced=self._clock_synced(),
            values=values,
        )

    def _note_blocks(
        self,
        answered: Sequence[tuple[Block, object]],
        refused: list[tuple[Block, BusError]],
        now: float,
    ) -> None:
        for block, _ in answered:
            if self._refused.pop(block, None) is not None:
                log.info("meter %s: block %s answers again", self.meter_id, block.label)
        for block, exc in refused:
            before = self._refused.get(block)
            code = exc.exception_code or 0
            self._refused[block] = RefusedBlock(
                block,
                code,
                before.since if before else self._clock(),
                now + self._block_retry_s,
            )
            if before is None:
                # Once per block, not per retry: the meter will say the same every time.
                log.warning(
                    "meter %s refuses block %s (exception %s): %s not read, asked again "
                    "every %.0f s",
                    self.meter_id,
                    block.label,
                    code,
                    ", ".join(q.value for q in block.quantities),
                    self._block_retry_s,
                )

    def _failed(self, kind: str, message: str) -> None:
        self.health.failures[kind] += 1
        self.health.consecutive += 1
        self.health.last_error = message
        if self.health.available is not False:
            log.error("meter %s unavailable: %s", self.meter_id, message)
            self.health.available = False
