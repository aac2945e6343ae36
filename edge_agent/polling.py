"""The poll loop of one bus: its meters read in turn, each at its interval, each reading handed
to the store writer and then to the connectors the meter feeds (their fail-safe rules).

Readings go from here straight to :class:`~edge_agent.store.writer.StoreWriter` (a thread
that group-commits them) and, once durable, to the uplink: no timer in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from edge_agent.config import MeterSettings, TcpLink
from edge_agent.meters.poller import MeterPoller
from edge_agent.sessions.controller import ConnectorController
from protocols.messages import MeterReading


async def poll_bus(
    meters: Sequence[MeterSettings],
    pollers: Mapping[str, MeterPoller],
    fed_by: Mapping[str, Sequence[ConnectorController]],
    store: Callable[..., None],
    stop: asyncio.Event,
) -> None:
    """Poll the meters of one bus in turn, each at its interval (monotonic schedule).

    Each reading goes to the store writer as soon as it is taken — except on a Modbus TCP
    bus, where the readings of meters due at the same moment (a round, milliseconds long)
    go together, so a site's round is one commit and one message rather than one per
    meter. An RS-485 read takes a large part of a second: there every reading goes alone.
    """
    loop = asyncio.get_running_loop()
    interval = {m.id: m.poll_interval_s for m in meters}
    due = dict.fromkeys(interval, loop.time())
    rounds = isinstance(meters[0].link, TcpLink) and len(meters) > 1
    taken: list[MeterReading] = []
    try:
        while not stop.is_set():
            meter_id = min(due, key=lambda k: due[k])
            await asyncio.sleep(max(0.0, due[meter_id] - loop.time()))
            reading = await pollers[meter_id].poll()
            due[meter_id] = max(due[meter_id] + interval[meter_id], loop.time())
            if reading is not None:
                taken.append(reading)
            others_due = any(t <= loop.time() for m, t in due.items() if m != meter_id)
            if taken and not (rounds and others_due and len(taken) < len(meters)):
                # Handed over before the fail-safe rules run: their relay actions may
                # take bus time, and the readings are on their way to disk meanwhile.
                store(*taken)
                taken = []
            for controller in fed_by.get(meter_id, ()):
                await controller.on_poll(reading)
    finally:
        if taken:  # a round cut short by the stop: what was taken is still stored
            store(*taken)
