"""The one decision path: a credential presented at a connector, from any input (RFID, keypad,
QR, the LAN endpoint, the control socket, the cloud's remote start) — decide, then start.

The authorizer (:mod:`edge_agent.auth.authorizer`) decides offline from the store; an
accepted decision goes to the connector's controller, which starts the session only with a
fresh meter reading and closes the relay only once the start is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from edge_agent.auth.authorizer import Authorizer, Credential, Moment
from edge_agent.control.messages import Refused, StartAnswer
from edge_agent.sessions.controller import Clocks, ConnectorController

log = logging.getLogger(__name__)


class DecisionPath:
    """``await path(credential, connector)``: the decision and, if accepted, the start."""

    def __init__(
        self,
        authorizer: Authorizer,
        controllers: Mapping[int, ConnectorController],
        *,
        clocks: Clocks,
        clock_synced: Callable[[], bool],
    ) -> None:
        self._authorizer = authorizer
        self._controllers = controllers
        self._clocks = clocks
        self._clock_synced = clock_synced

    async def __call__(self, credential: Credential, connector: int) -> StartAnswer | Refused:
        controller = self._controllers.get(connector)
        if controller is None:
            return Refused(error=f"no connector {connector}")
        at = Moment(self._clocks.wall(), self._clocks.mono(), self._clock_synced())
        decision = self._authorizer.authorize(
            credential, connector=connector, at=at, connector_busy=controller.busy
        )
        answer = StartAnswer(
            ok=decision.accepted, status=decision.status.value, reason=decision.reason
        )
        if decision.accepted:
            result = await controller.start(decision)
            answer.ok, answer.session_id = result.session_id is not None, result.session_id
            answer.detail = result.detail
        log.info(
            "connector %s: %s %s -> %s",
            connector,
            decision.kind.value,
            decision.ref[:12],
            answer.detail if decision.accepted else decision.status.value,
        )
        return answer
