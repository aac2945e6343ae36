"""What the agent's ``status`` message says about its meters and connectors.

The sync task builds each status from :class:`StatusParts`, which the composition root
gathers here from the live pollers and connector controllers: each meter's health comes from
:meth:`edge_agent.meters.poller.MeterPoller.snapshot` (one place, so a new health fact is
added there once), each connector's state from its controller.

A status is queued every ``mqtt.status_interval_s`` and, sooner, when what a user of the
cloud would see changes: a connector's status or session, or a meter's availability
(:meth:`StatusParts.signature`). Ages and error counts change on every poll, so they are left
out of the signature: they would turn every check into a message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.messages import ConnectorState, MeterHealth

if TYPE_CHECKING:
    from edge_agent.meters.poller import MeterPoller
    from edge_agent.sessions.controller import ConnectorController

#: The wire's limit on meters and connectors per status (``protocols.messages.Status``).
MAX_ENTRIES = 32


@dataclass(frozen=True, slots=True)
class StatusParts:
    meters: tuple[MeterHealth, ...] = ()
    connectors: tuple[ConnectorState, ...] = ()

    def signature(self) -> tuple[object, ...]:
        """What, when it changes, is worth a status now rather than at the next interval."""
        return (
            tuple((m.meter_id, m.available, tuple(m.unavailable_blocks)) for m in self.meters),
            tuple((c.connector, c.status, c.session_id) for c in self.connectors),
        )


def no_parts() -> StatusParts:
    """A sync service with nothing attached (tests, tools) reports no meters or connectors."""
    return StatusParts()


def connector_state(controller: ConnectorController) -> ConnectorState:
    session = controller.session
    return ConnectorState(
        connector=controller.id,
        status=controller.state.status,
        session_id=session.session_id if session is not None and session.is_open else None,
    )


def gather(
    pollers: Iterable[MeterPoller], controllers: Iterable[ConnectorController]
) -> StatusParts:
    """The meters' health and the connectors' states, now (configuration order)."""
    return StatusParts(
        meters=tuple(p.snapshot() for p in pollers)[:MAX_ENTRIES],
        connectors=tuple(connector_state(c) for c in controllers)[:MAX_ENTRIES],
    )
