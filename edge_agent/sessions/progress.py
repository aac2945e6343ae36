"""The sessions' periodic ``updated`` events (``sessions.progress_interval_s``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from edge_agent.sessions.controller import ConnectorController


async def progress_loop(
    controllers: Iterable[ConnectorController], interval_s: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        for controller in controllers:
            await controller.emit_progress()
