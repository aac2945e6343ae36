"""The control-socket commands the technician's CLI asks of the running agent.

:func:`handle` answers ``meter_read``, ``meter_raw``, ``relay_state``, ``relay``,
``relay_check`` (close, confirm power on the meter, open, confirm it stops — the agent's own
``relay_test`` only reads the relay back), ``sync_status`` and ``sync_flush``; it returns None
for anything else, which the agent's own handler answers. They run inside the agent, on its
buses and their locks, so a technician never competes with the poller for the RS-485 line.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edge_agent.errors import AgentError, MeterError, RelayError
from edge_agent.tech.direct import check_register_range
from edge_agent.tech.relaytest import run_relay_test
from protocols.enums import ConnectorStatus, StopReason
from protocols.meters import Quantity

if TYPE_CHECKING:
    from edge_agent.app import Agent
    from edge_agent.sessions.controller import ConnectorController

TECH_COMMANDS = frozenset(
    {"meter_read", "meter_raw", "relay_state", "relay", "relay_check", "sync_status", "sync_flush"}
)


def _refused(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


async def handle(agent: Agent, req: dict[str, Any]) -> dict[str, Any] | None:
    cmd = req["cmd"]
    if cmd not in TECH_COMMANDS:
        return None
    if cmd == "meter_read":
        return await _meter_read(agent, req.get("meter"))
    if cmd == "meter_raw":
        return await _meter_raw(agent, req)
    if cmd == "relay_state":
        return await _relay_state(agent)
    if cmd == "sync_status":
        return _sync_status(agent)
    if cmd == "sync_flush":
        if agent.sync is not None:
            agent.sync.notify()
        return _sync_status(agent)
    connector = req.get("connector")
    controller = agent.controllers.get(connector) if isinstance(connector, int) else None
    if controller is None:
        return _refused(f"unknown connector {connector!r}")
    force = req.get("force") is True
    if cmd == "relay":
        closed = req.get("closed")
        if not isinstance(closed, bool):
            return _refused("relay needs closed: true or false")
        return await _relay(agent, controller, closed=closed, force=force)
    return await _relay_check(agent, controller, force=force)


async def _meter_read(agent: Agent, meter_id: object) -> dict[str, Any]:
    """Poll now (on the meter's bus, under its lock); each meter's values or error."""
    if meter_id is not None and meter_id not in agent.pollers:
        return _refused(f"unknown meter {meter_id!r}")
    meters = []
    for mid, poller in agent.pollers.items():
        if meter_id is not None and mid != meter_id:
            continue
        reading = await poller.poll()
        kind = None
        if reading is None:
            failures = poller.health.failures
            kind = max(failures, key=lambda k: failures[k]) if failures else "timeout"
        meters.append({
            "meter_id": mid, "model": poller.settings.model, "unit": poller.settings.unit_id,
            "values": None if reading is None else {q.value: v for q, v in reading.values.items()},
            "error": None if reading is not None else poller.health.last_error, "kind": kind,
            "available": poller.health.available,
        })  # fmt: skip
    return {"ok": True, "meters": meters}


async def _meter_raw(agent: Agent, req: dict[str, Any]) -> dict[str, Any]:
    bus = agent.buses.get(str(req.get("bus")))
    if bus is None:
        return _refused(f"the agent has no bus {req.get('bus')!r}")
    try:
        unit, fc, addr, count = (int(req[k]) for k in ("unit", "fc", "addr", "count"))
        check_register_range(fc, addr, count)
        words = await bus.read_registers(unit, fc, addr, count)
    except (KeyError, TypeError, ValueError):
        return _refused("meter_raw needs integer unit, fc, addr, count")
    except AgentError as exc:
        return _refused(str(exc))
    return {"ok": True, "registers": list(words)}


async def _relay_state(agent: Agent) -> dict[str, Any]:
    out = []
    for cid, controller in agent.controllers.items():
        entry: dict[str, Any] = {"connector": cid, "commanded_closed": controller.relay_closed}
        try:
            entry.update(read_closed=await controller.relay.is_closed(), error=None)
        except RelayError as exc:
            entry.update(read_closed=None, error=str(exc))
        out.append(entry)
    return {"ok": True, "connectors": out}


def _sync_status(agent: Agent) -> dict[str, Any]:
    sync = agent.sync
    if sync is None:
        return {"ok": True, "configured": False, "connected": False}
    stats = sync.stats
    return {
        "ok": True, "configured": True, "connected": stats.connected,
        "last_error": stats.last_error,
        "last_ack_at": None if stats.last_ack_at is None else stats.last_ack_at.isoformat(),
        "connects": stats.connects, "published": stats.published,
        "acked_rows": stats.acked_rows, "resent": stats.resent,
        # Rows handed to the broker and waiting for the cloud's application ack (a read of
        # the service's private uplink: the sync package is not ours to change).
        "awaiting_ack": len(sync._uplink.window),
    }  # fmt: skip


async def _ensure_free(controller: ConnectorController, *, force: bool) -> str | None:
    """None when the connector may be switched by hand: Available, or --force (the session
    is stopped first, reason Local, so it is billed and reported as usual)."""
    status = controller.state.status
    if status is ConnectorStatus.AVAILABLE:
        return None
    if not force:
        session = controller.session
        what = f"session {session.session_id} is active" if session else f"it is {status.value}"
        return f"connector {controller.id}: {what}; use --force"
    if controller.session is not None and controller.session.is_open:
        refused = await controller.stop(StopReason.LOCAL)
        if refused:
            return f"could not stop the session first: {refused}"
    return None


async def _relay(
    agent: Agent, controller: ConnectorController, *, closed: bool, force: bool
) -> dict[str, Any]:
    del agent
    if not closed:
        # Opening is always allowed: it is the safe state. An open session is stopped
        # properly first, so it is billed up to now.
        if controller.session is not None and controller.session.is_open:
            await controller.stop(StopReason.LOCAL)
        await controller.force_open()
    else:
        refused = await _ensure_free(controller, force=force)
        if refused:
            return _refused(refused)
        try:
            await controller.relay.set_closed(True)
        except RelayError as exc:
            await controller.force_open()
            return _refused(str(exc))
    try:
        read = await controller.relay.is_closed()
    except RelayError as exc:
        return _refused(str(exc))
    return {"ok": read is None or read == closed, "read_closed": read}


async def _relay_check(
    agent: Agent, controller: ConnectorController, *, force: bool
) -> dict[str, Any]:
    refused = await _ensure_free(controller, force=force)
    if refused:
        return _refused(refused)
    meter_id = agent.settings.connector(controller.id).meter
    poller = agent.pollers[meter_id]

    async def power() -> float | None:
        reading = await poller.poll()
        return None if reading is None else reading.values.get(Quantity.POWER_W)

    limits = agent.settings.limits
    try:
        result = await run_relay_test(
            controller.relay, power, charging_power_w=limits.charging_power_w,
            stuck_power_w=limits.stuck_relay_power_w, settle_s=limits.stuck_relay_check_s + 1.0,
        )  # fmt: skip
    except (RelayError, MeterError) as exc:
        await controller.force_open()
        return _refused(str(exc))
    finally:
        # The test bypassed the controller: its view of the relay is "open", as now.
        controller.relay_closed = False
        await asyncio.sleep(0)
    return {"ok": not result.failed, **result.to_json()}
