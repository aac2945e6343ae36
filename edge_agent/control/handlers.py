"""What the agent does for each control request: one function per ``cmd``, each given the
narrow port it needs (:mod:`edge_agent.control.ports`) and a typed request
(:mod:`edge_agent.control.messages`); :mod:`edge_agent.control.table` registers them.

The technician's live actions run inside the agent, on its buses and their locks, so a
technician never competes with the poller for the RS-485 line. A relay switched by hand is
never left unwatched: the connector's controller holds the connector (``Unavailable``, no
session starts) and its safety tick opens the relay when the fail-safe rules trip or its
time is up. There is one relay test (:meth:`ConnectorController.test_relay
<edge_agent.sessions.controller.ConnectorController.test_relay>`): ``relay_check`` watches the
meter's power (the technician's ``relay test``), ``relay_test`` (and the cloud's relay-test
command, :mod:`edge_agent.cloud_commands`) only reads the relay back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edge_agent.auth.authorizer import Credential, IdTag, Pin, Token
from edge_agent.control import messages as m
from edge_agent.control.ports import ConnectorPort, Present, RegisterBus, SyncPort
from edge_agent.errors import AgentError, RelayError
from edge_agent.meters.poller import MeterPoller
from edge_agent.meters.registers import check_register_range
from protocols.enums import ConnectorStatus

Connectors = Mapping[int, ConnectorPort]


def _connector(connectors: Connectors, connector: int) -> ConnectorPort | m.Refused:
    found = connectors.get(connector)
    return m.Refused(error=f"unknown connector {connector!r}") if found is None else found


def _done(refused: str | None) -> m.Done | m.Refused:
    return m.Done() if refused is None else m.Refused(error=refused)


async def status(view: Callable[[], m.StatusAnswer], req: m.Status) -> m.StatusAnswer:
    return view()


async def start(present: Present, req: m.Start) -> m.StartAnswer | m.Refused:
    credential: Credential
    if req.id_tag is not None:
        credential = IdTag(req.id_tag)
    elif req.token is not None:
        credential = Token(req.token)
    elif req.pin is not None:
        credential = Pin(req.pin)
    else:
        return m.Refused(error="start needs id_tag, token or pin")
    return await present(credential, req.connector)


async def stop(connectors: Connectors, req: m.Stop) -> m.Done | m.Refused:
    found = _connector(connectors, req.connector)
    if isinstance(found, m.Refused):
        return found
    return _done(await found.stop(req.reason))


async def clear_fault(connectors: Connectors, req: m.ClearFault) -> m.Done | m.Refused:
    found = _connector(connectors, req.connector)
    if isinstance(found, m.Refused):
        return found
    return _done(await found.clear_fault())


async def relay_test(connectors: Connectors, req: m.RelayTest) -> m.RelayTestAnswer | m.Refused:
    """Close, read back, open, read back: the quick check the cloud can ask for."""
    found = _connector(connectors, req.connector)
    if isinstance(found, m.Refused):
        return found
    if found.state.status is not ConnectorStatus.AVAILABLE:
        return m.Refused(error=f"connector is {found.state.status.value}")
    result = await found.test_relay(watch_power=False, force=False)
    if isinstance(result, str):
        return m.Refused(error=result)
    return m.RelayTestAnswer(
        ok=not result.failed, closed_read=result.closed_read, open_read=result.open_read
    )


async def relay_check(connectors: Connectors, req: m.RelayCheck) -> m.RelayCheckAnswer | m.Refused:
    """The technician's ``relay test``: close, confirm power on the meter, open, confirm it
    stops (``--force`` stops a session first)."""
    found = _connector(connectors, req.connector)
    if isinstance(found, m.Refused):
        return found
    result = await found.test_relay(watch_power=True, force=req.force)
    if isinstance(result, str):
        return m.Refused(error=result)
    return m.RelayCheckAnswer(
        ok=not result.failed,
        verdict=result.verdict.value,
        detail=result.detail,
        closed_read=result.closed_read,
        open_read=result.open_read,
        power_closed_w=result.power_closed_w,
        power_open_w=result.power_open_w,
    )


async def relay(connectors: Connectors, req: m.Relay) -> m.RelayAnswer | m.Refused:
    """Open (always allowed: the safe state) or close by hand, then read the relay back."""
    found = _connector(connectors, req.connector)
    if isinstance(found, m.Refused):
        return found
    if req.closed:
        refused = await found.close_by_hand(req.hold_s, force=req.force)
        if refused:
            return m.Refused(error=refused)
    else:
        await found.open_by_hand()
    try:
        read = await found.relay.is_closed()
    except RelayError as exc:
        return m.Refused(error=str(exc))
    answer = m.RelayAnswer(ok=read is None or read == req.closed, read_closed=read)
    hold_s = found.hand_hold_s
    if req.closed and hold_s is not None:
        answer.hold_s = hold_s
    return answer


async def relay_state(connectors: Connectors, req: m.RelayState) -> m.RelayStateAnswer:
    out = []
    for cid, controller in connectors.items():
        read: bool | None = None
        error = None
        try:
            read = await controller.relay.is_closed()
        except RelayError as exc:
            error = str(exc)
        out.append(
            m.RelayStateView(
                connector=cid,
                commanded_closed=controller.relay_closed or controller.closed_by_hand,
                closed_by_hand=controller.closed_by_hand,
                opens_in_s=controller.hand_opens_in_s(),
                read_closed=read,
                error=error,
            )
        )
    return m.RelayStateAnswer(connectors=out)


async def meter_read(
    meters: Mapping[str, MeterPoller], req: m.MeterRead
) -> m.MeterReadAnswer | m.Refused:
    """Poll now (on the meter's bus, under its lock); each meter's values or error."""
    if req.meter is not None and req.meter not in meters:
        return m.Refused(error=f"unknown meter {req.meter!r}")
    out = []
    for mid, poller in meters.items():
        if req.meter is not None and mid != req.meter:
            continue
        reading = await poller.poll()
        kind = None
        if reading is None:
            failures = poller.health.failures
            kind = max(failures, key=lambda k: failures[k]) if failures else "timeout"
        out.append(
            m.MeterReadView(
                meter_id=mid,
                model=poller.settings.model,
                unit=poller.settings.unit_id,
                values=None if reading is None else {q.value: v for q, v in reading.values.items()},
                error=None if reading is not None else poller.health.last_error,
                kind=kind,
                available=poller.health.available,
                unavailable_blocks=poller.unavailable_report(),
            )
        )
    return m.MeterReadAnswer(meters=out)


async def meter_raw(
    buses: Mapping[str, RegisterBus], req: m.MeterRaw
) -> m.MeterRawAnswer | m.Refused:
    bus = buses.get(req.bus)
    if bus is None:
        return m.Refused(error=f"the agent has no bus {req.bus!r}")
    try:
        check_register_range(req.fc, req.addr, req.count)
        words = await bus.read_registers(req.unit, req.fc, req.addr, req.count)
    except AgentError as exc:
        return m.Refused(error=str(exc))
    return m.MeterRawAnswer(registers=list(words))


def _sync_status(sync: SyncPort | None) -> m.SyncStatusAnswer:
    if sync is None:
        return m.SyncStatusAnswer(configured=False, connected=False)
    stats = sync.stats
    return m.SyncStatusAnswer(
        configured=True,
        connected=stats.connected,
        last_error=stats.last_error,
        last_ack_at=None if stats.last_ack_at is None else stats.last_ack_at.isoformat(),
        connects=stats.connects,
        published=stats.published,
        acked_rows=stats.acked_rows,
        resent=stats.resent,
        dropped_no_subscribers=stats.dropped_no_subscribers,
        awaiting_ack=sync.awaiting_ack,
        ack_silence_s=round(sync.ack_silence_s, 3),
    )


async def sync_status(sync: SyncPort | None, req: m.SyncStatus) -> m.SyncStatusAnswer:
    return _sync_status(sync)


async def ocpp_status(
    view: Callable[[], m.OcppStatusAnswer] | None, req: m.OcppStatus
) -> m.OcppStatusAnswer:
    return m.OcppStatusAnswer(configured=False) if view is None else view()


async def sync_flush(sync: SyncPort | None, req: m.SyncFlush) -> m.SyncStatusAnswer:
    if sync is not None:
        sync.notify()
    return _sync_status(sync)
