"""What each control handler may touch: narrow ports, not the agent.

A handler receives only the port it needs (:mod:`edge_agent.control.table` wires them): the
connectors (stop, clear a fault, switch and test the relay by hand — the controller holds the
connector for the technician and applies the session machine's events), the meters and their
buses, the sync service's counters, the one decision path, the status view. The composition
root (:mod:`edge_agent.app`) builds the ports from the live parts; tests may build them from
fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from edge_agent.auth.authorizer import Credential
from edge_agent.control.messages import OcppStatusAnswer, Refused, StartAnswer, StatusAnswer
from edge_agent.meters.poller import MeterPoller
from edge_agent.relay.base import RelayDriver
from edge_agent.relay.check import RelayTestResult
from edge_agent.sessions.machine import Connector, Session
from edge_agent.sync.service import SyncStats
from protocols.enums import StopReason


class ConnectorPort(Protocol):
    """One connector as a technician's request sees it
    (:class:`edge_agent.sessions.controller.ConnectorController`)."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> Connector: ...
    @property
    def session(self) -> Session | None: ...
    @property
    def relay(self) -> RelayDriver: ...
    @property
    def relay_closed(self) -> bool: ...
    @property
    def closed_by_hand(self) -> bool: ...
    @property
    def hand_hold_s(self) -> float | None: ...
    def hand_opens_in_s(self) -> float | None: ...
    async def stop(self, reason: StopReason) -> str | None: ...
    async def extend(self, session_id: str, until: datetime) -> bool: ...
    async def clear_fault(self) -> str | None: ...
    async def close_by_hand(self, hold_s: float, *, force: bool) -> str | None: ...
    async def open_by_hand(self) -> None: ...
    async def set_available(self, available: bool) -> str | None: ...
    async def test_relay(self, *, watch_power: bool, force: bool) -> RelayTestResult | str: ...


class RegisterBus(Protocol):
    """A Modbus bus the agent owns (:class:`edge_agent.meters.bus.ModbusBus`)."""

    async def read_registers(
        self, unit_id: int, function_code: int, start: int, count: int
    ) -> Sequence[int]: ...


class SyncPort(Protocol):
    """The sync service's counters and its wake-up
    (:class:`edge_agent.sync.service.SyncService`)."""

    @property
    def stats(self) -> SyncStats: ...
    @property
    def awaiting_ack(self) -> int: ...
    @property
    def ack_silence_s(self) -> float: ...
    def notify(self) -> None: ...


#: The one decision path (:meth:`edge_agent.app.Agent.present`): decide, then start.
Present = Callable[[Credential, int], Awaitable[StartAnswer | Refused]]


@dataclass(frozen=True, slots=True)
class Ports:
    """Everything the control handlers may use; each handler takes one or two of these."""

    connectors: Mapping[int, ConnectorPort]
    meters: Mapping[str, MeterPoller]
    buses: Mapping[str, RegisterBus]
    sync: SyncPort | None
    present: Present
    status: Callable[[], StatusAnswer]
    #: The OCPP uplink's state (None: no ``[ocpp]`` table).
    ocpp: Callable[[], OcppStatusAnswer] | None = None
