"""The one table of control handlers, and the decoding that puts a request in front of one.

:func:`build_table` registers each request type (:mod:`edge_agent.control.messages`) with
its handler (:mod:`edge_agent.control.handlers`) bound to the port it needs
(:mod:`edge_agent.control.ports`). :meth:`Dispatcher.answer` decodes a request line, runs its
handler, and encodes the answer; a bad request gets ``ok: false`` and an ``error``, never an
exception (the socket, :mod:`edge_agent.control.socket`, never drops a client for it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import msgspec

from edge_agent.control import handlers as h
from edge_agent.control import messages as m
from edge_agent.control.ports import Ports

R = TypeVar("R", bound=m.Request)
Handler = Callable[[Any], Awaitable[m.Answer]]


class Dispatcher:
    """Request type → handler; each request type registered once."""

    def __init__(self) -> None:
        self._handlers: dict[type[m.Request], Handler] = {}
        self._by_cmd: dict[str, type[m.Request]] = {}

    def register(self, kind: type[R], handler: Callable[[R], Awaitable[m.Answer]]) -> None:
        tag = kind.__struct_config__.tag
        if kind in self._handlers or not isinstance(tag, str):
            raise ValueError(f"{kind.__name__}: registered twice, or not a tagged request")
        self._handlers[kind] = handler
        self._by_cmd[tag] = kind

    @property
    def commands(self) -> frozenset[str]:
        return frozenset(self._by_cmd)

    async def run(self, request: m.Request) -> m.Answer:
        answer = await self._handlers[type(request)](request)
        if not isinstance(answer, request.answer):
            raise TypeError(f"{type(request).__name__} answered {type(answer).__name__}")
        return answer

    def decode(self, line: bytes) -> m.Request | m.Refused:
        """The request on ``line``, or the refusal a client is told."""
        try:
            raw = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            return m.Refused(error=f"not JSON: {exc}")
        if not isinstance(raw, dict) or not isinstance(raw.get("cmd"), str):
            return m.Refused(error="a request is a JSON object with a 'cmd' string")
        kind = self._by_cmd.get(raw["cmd"])
        if kind is None:
            return m.Refused(error=f"unknown cmd {raw['cmd']!r}")
        try:
            return msgspec.convert(raw, kind)
        except msgspec.ValidationError as exc:
            return m.Refused(error=f"bad {raw['cmd']} request: {exc}")

    async def answer(self, line: bytes) -> bytes:
        request = self.decode(line)
        answer = request if isinstance(request, m.Refused) else await self.run(request)
        # The bytes the untyped socket wrote (json.dumps' spacing): a technician reading the
        # socket by hand, and the CLI, see the same lines as before.
        return json.dumps(msgspec.to_builtins(answer)).encode()


def build_table(ports: Ports) -> Dispatcher:
    """Every control request, with the one port its handler may use."""
    table = Dispatcher()
    table.register(m.Status, partial(h.status, ports.status))
    table.register(m.Start, partial(h.start, ports.present))
    table.register(m.Stop, partial(h.stop, ports.connectors))
    table.register(m.ClearFault, partial(h.clear_fault, ports.connectors))
    table.register(m.RelayTest, partial(h.relay_test, ports.connectors))
    table.register(m.RelayCheck, partial(h.relay_check, ports.connectors))
    table.register(m.Relay, partial(h.relay, ports.connectors))
    table.register(m.RelayState, partial(h.relay_state, ports.connectors))
    table.register(m.MeterRead, partial(h.meter_read, ports.meters))
    table.register(m.MeterRaw, partial(h.meter_raw, ports.buses))
    table.register(m.SyncStatus, partial(h.sync_status, ports.sync))
    table.register(m.SyncFlush, partial(h.sync_flush, ports.sync))
    table.register(m.OcppStatus, partial(h.ocpp_status, ports.ocpp))
    return table
