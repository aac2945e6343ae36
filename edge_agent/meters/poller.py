"""One meter: read its whole register map in the fewest frames, decode, track availability.

The map and the block plan come from :mod:`protocols.meters` (data, not code). A poll either
yields a :class:`~protocols.messages.MeterReading` or counts a failure by kind; it never
raises for what a meter does. Availability is logged once at ERROR when the meter stops
answering and once at INFO when it is back, never once per poll (a flapping RS-485 line
would flood the journal).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge_agent.config import MeterSettings
from edge_agent.meters.bus import BusError, ModbusBus
from protocols.errors import DecodeError
from protocols.messages import MeterHealth, MeterReading
from protocols.meters import Block, RegisterMap, decode_blocks, load_map, plan_blocks

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
    #: Monotonic time of the last good reading (None until the meter first answers).
    last_good_mono: float | None = None

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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.meter_id = settings.id
        self.bus = bus
        self.register_map: RegisterMap = load_map(settings.model)
        self.blocks: tuple[Block, ...] = plan_blocks(self.register_map)
        self.health = MeterHealthCounters()
        self._clock = clock
        self._clock_synced = clock_synced
        self._monotonic = monotonic

    def snapshot(self) -> MeterHealth:
        """This meter's health as the status message reports it: the one place that turns
        the poller's counters into the wire's :class:`MeterHealth`."""
        last = self.health.last_good_mono
        return MeterHealth(
            meter_id=self.meter_id,
            model=self.settings.model[:32],
            available=self.health.available is True,
            errors=self.health.errors,
            last_reading_age_s=None if last is None else max(0.0, self._monotonic() - last),
        )

    async def poll(self) -> MeterReading | None:
        """Read every block; None (and a counted failure) if any block fails."""
        self.health.polls += 1
        answers = []
        try:
            for block in self.blocks:
                words = await self.bus.read_registers(
                    self.settings.unit_id, block.function_code, block.start, block.count
                )
                answers.append((block, words))
            values = decode_blocks(self.register_map, answers)
        except BusError as exc:
            self._failed(exc.kind, str(exc))
            return None
        except DecodeError as exc:
            self._failed("garbage", str(exc))
            return None
        if not values:
            self._failed("garbage", "no quantity decoded")
            return None
        self.health.good += 1
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

    def _failed(self, kind: str, message: str) -> None:
        self.health.failures[kind] += 1
        self.health.last_error = message
        if self.health.available is not False:
            log.error("meter %s unavailable: %s", self.meter_id, message)
            self.health.available = False
