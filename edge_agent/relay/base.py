"""The one interface every relay driver offers (Modbus coil, GPIO, none, fake)."""

from __future__ import annotations

from typing import Protocol


class RelayDriver(Protocol):
    """Switches one connector's contactor. ``closed`` True means power may flow.

    Drivers raise :class:`~edge_agent.errors.RelayError` when they cannot switch or read;
    the controller treats that as doubt, and on doubt it faults the connector.
    """

    name: str

    async def set_closed(self, closed: bool) -> None: ...

    async def is_closed(self) -> bool | None:
        """The output as the driver reads it back, or None when it cannot be read."""
        ...
