"""The control socket's ``status`` answer, gathered from the live parts of the agent.

(The cloud's ``status`` message is another view of the same parts: :mod:`edge_agent.status`.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge_agent import __version__
from edge_agent.control.messages import (
    ConnectorView,
    MeterView,
    StatusAnswer,
    ThinnedView,
    TickView,
    WriterView,
)
from edge_agent.meters.poller import MeterPoller
from edge_agent.safety import TickLateness
from edge_agent.sessions.controller import ConnectorController
from edge_agent.store import outbox
from edge_agent.store import readings as reading_store
from edge_agent.store.writer import StoreWriter


def connector_view(c: ConnectorController) -> ConnectorView:
    return ConnectorView(
        connector=c.id,
        status=c.state.status.value,
        session_id=c.session.session_id if c.session else None,
        energy_wh=c.session.energy_wh if c.session else None,
        relay_closed=c.relay_closed or c.closed_by_hand,
        closed_by_hand=c.closed_by_hand,
        fault=c.state.fault.value if c.state.fault else None,
    )


def meter_view(p: MeterPoller) -> MeterView:
    return MeterView(
        meter_id=p.meter_id,
        available=p.health.available,
        polls=p.health.polls,
        errors=dict(p.health.failures),
        last_error=p.health.last_error,
        unavailable_blocks=p.unavailable_report(),
    )


@dataclass(frozen=True, slots=True)
class StatusView:
    """``status``, now: call it (the table's status handler does)."""

    device_id: str
    clock_synced: Callable[[], bool]
    controllers: Iterable[ConnectorController]
    pollers: Iterable[MeterPoller]
    conn: sqlite3.Connection
    writer: StoreWriter
    ticks: TickLateness

    def __call__(self) -> StatusAnswer:
        thinned = reading_store.thinned_total(self.conn)
        late = self.ticks.summary()
        w = self.writer
        return StatusAnswer(
            device_id=self.device_id,
            version=__version__,
            clock_synced=self.clock_synced(),
            connectors=[connector_view(c) for c in self.controllers],
            meters=[meter_view(p) for p in self.pollers],
            outbox=outbox.depth(self.conn),
            store_writer=WriterView(waiting=w.waiting, committed=w.committed, commits=w.commits),
            safety_tick=TickView(
                ticks=late.ticks,
                late_p50_ms=late.late_p50_ms,
                late_p99_ms=late.late_p99_ms,
                late_max_ms=late.late_max_ms,
            ),
            thinned=ThinnedView(readings=thinned.readings, batches=thinned.batches),
        )
