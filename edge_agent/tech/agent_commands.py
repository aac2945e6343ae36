"""The control-socket commands the technician's CLI asks of the running agent.

:func:`handle` answers ``meter_read``, ``meter_raw``, ``relay_state``, ``relay``,
``relay_check`` (close, confirm power on the meter, open, confirm it stops — the agent's own
``relay_test`` only reads the relay back), ``sync_status`` and ``sync_flush``; it returns None
for anything else, which the agent's own handler answers. They run inside the agent, on its
buses and their locks, so a technician never competes with the poller for the RS-485 line.

A relay switched by hand is never left unwatched: while it is closed (``relay`` with
``closed: true``, or during ``relay_check``) the connector is ``Unavailable`` so no session
starts under the technician's hands, and :func:`watch_manual_closes`, run on the agent's
safety tick, opens it when the fail-safe rules trip or its time is up
(:mod:`edge_agent.tech.manual_close`). Once it is open again the controller's stuck-relay
check runs as after any opening, so a welded contactor faults the connector.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edge_agent.errors import AgentError, MeterError, RelayError
from edge_agent.relay.failsafe import relay_opened
from edge_agent.sessions.machine import Connector
from edge_agent.tech import manual_close
from edge_agent.tech.direct import check_register_range
from edge_agent.tech.relaytest import run_relay_test
from protocols.enums import ConnectorStatus, StopReason
from protocols.meters import Quantity

if TYPE_CHECKING:
    from edge_agent.app import Agent
    from edge_agent.sessions.controller import ConnectorController

log = logging.getLogger(__name__)

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
        hold_s = req.get("hold_s", manual_close.DEFAULT_HOLD_S)
        if not isinstance(hold_s, int | float) or isinstance(hold_s, bool) or hold_s <= 0:
            return _refused("relay needs hold_s: a positive number of seconds")
        return await _relay(agent, controller, closed=closed, force=force, hold_s=float(hold_s))
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
            "unavailable_blocks": poller.unavailable_report(),
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
        manual = agent.manual_closes.get(cid)
        entry: dict[str, Any] = {
            "connector": cid, "commanded_closed": controller.relay_closed or manual is not None,
            "closed_by_hand": manual is not None,
            "opens_in_s": None if manual is None else max(
                0.0, manual.closed_at + manual.hold_s - agent.clocks.mono()),
        }  # fmt: skip
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
        # Rows handed to the broker and waiting for the cloud's application ack.
        "awaiting_ack": sync.awaiting_ack,
        # By the monotonic clock: right while the wall clock is unsynced (edge_agent/tech/acks.py).
        "ack_silence_s": round(sync.ack_silence_s, 3),
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


def _reserve(controller: ConnectorController) -> None:
    """Make the connector Unavailable while a technician has its relay (no session can
    start); a Faulted connector stays Faulted (it refuses sessions too, and says why)."""
    if controller.state.status is not ConnectorStatus.FAULTED:
        controller.state = Connector(controller.id, ConnectorStatus.UNAVAILABLE)
    # A stuck check still pending from a session stopped by --force would take the power
    # the technician lets through for a welded contactor.
    controller.watch = replace(controller.watch, opened_at=None)


def _release(agent: Agent, controller: ConnectorController) -> None:
    """After a relay closed by hand was opened: the stuck-relay check starts now (power still
    flowing 2 s later faults the connector), and the connector is Available again."""
    controller.watch = relay_opened(controller.watch, agent.clocks.mono())
    if controller.state.status is ConnectorStatus.UNAVAILABLE:
        controller.state = Connector(controller.id)


async def _relay(
    agent: Agent, controller: ConnectorController, *, closed: bool, force: bool, hold_s: float
) -> dict[str, Any]:
    if not closed:
        # Opening is always allowed: it is the safe state. An open session is stopped
        # properly first, so it is billed up to now.
        if controller.session is not None and controller.session.is_open:
            await controller.stop(StopReason.LOCAL)
        by_hand = agent.manual_closes.pop(controller.id, None) is not None
        await controller.force_open()
        if by_hand:
            _release(agent, controller)
    else:
        refused = await _ensure_free(controller, force=force)
        if refused:
            return _refused(refused)
        _reserve(controller)
        agent.manual_closes[controller.id] = manual_close.start(agent.clocks.mono(), hold_s)
        try:
            await controller.relay.set_closed(True)
        except RelayError as exc:
            agent.manual_closes.pop(controller.id, None)
            await controller.force_open()
            _release(agent, controller)
            return _refused(str(exc))
    try:
        read = await controller.relay.is_closed()
    except RelayError as exc:
        return _refused(str(exc))
    answer: dict[str, Any] = {"ok": read is None or read == closed, "read_closed": read}
    if closed:
        answer["hold_s"] = agent.manual_closes[controller.id].hold_s
    return answer


async def watch_manual_closes(agent: Agent) -> None:
    """Open every relay closed by hand whose fail-safe rules tripped or whose time is up
    (called on the agent's safety tick, like the controllers' own rules)."""
    for cid, before in list(agent.manual_closes.items()):
        controller = agent.controllers[cid]
        manual, why = manual_close.assess(
            before, mono=agent.clocks.mono(), heard_mono=controller.watch.last_good_mono,
            values=controller.last_values,
            limits=manual_close.safety_limits(agent.settings, cid),
        )  # fmt: skip
        if why is None:
            agent.manual_closes[cid] = manual
            continue
        log.warning("connector %s: opening the relay closed by hand: %s", cid, why)
        del agent.manual_closes[cid]
        await controller.force_open()
        _release(agent, controller)


async def _relay_check(
    agent: Agent, controller: ConnectorController, *, force: bool
) -> dict[str, Any]:
    refused = await _ensure_free(controller, force=force)
    if refused:
        return _refused(refused)
    _reserve(controller)
    # The test ends with the relay open: a close by hand before it is over.
    agent.manual_closes.pop(controller.id, None)
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
        _release(agent, controller)
    return {"ok": not result.failed, **result.to_json()}
