"""Building the OCPP uplink from the agent's parts (called by :mod:`edge_agent.app` only when
the configuration has an ``[ocpp]`` table, so an agent without one never imports this
package or its WebSocket client)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from edge_agent.auth.authorizer import Authorizer
from edge_agent.config import OcppSettings
from edge_agent.control.ports import Present
from edge_agent.ocpp.calls import CsmsCalls
from edge_agent.ocpp.present import OnlinePresent
from edge_agent.ocpp.uplink import OcppUplink
from edge_agent.sessions.controller import Clocks, ConnectorController


def build_uplink(
    settings: OcppSettings,
    *,
    device_id: str,
    conn: sqlite3.Connection,
    controllers: Mapping[int, ConnectorController],
    authorizer: Authorizer,
    clocks: Clocks,
    present: Present,
    restart: Callable[[], None],
) -> tuple[OcppUplink, Present]:
    """The uplink, and the decision path every input should use from now on (the CSMS asked
    about unknown id tags first)."""
    uplink = OcppUplink(
        settings,
        device_id=device_id,
        conn=conn,
        connectors=controllers,
        now=clocks.wall,
        restart=restart,
        mono=clocks.mono,
    )
    # The uplink waits on the connectors' changes instead of polling them and the store.
    for controller in controllers.values():
        controller.subscribe(status=uplink.status_changed, events=uplink.wake)
    online = OnlinePresent(
        present,
        authorizer=authorizer,
        conn=conn,
        clocks=clocks,
        ask=uplink.authorize,
        wake=uplink.wake,
    )
    uplink.bind(
        CsmsCalls(
            conn=conn,
            keys=uplink.keys,
            connectors=controllers,
            present=online,
            uplink=uplink.actions(),
            now=clocks.wall,
        )
    )
    return uplink, online
