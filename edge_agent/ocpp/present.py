"""The decision path with the CSMS asked first about an id tag the agent does not know
(OCPP 1.6 §4.1 Authorize): the agent's own decision path (:mod:`edge_agent.decide`) wrapped,
never a second copy of its rules.

* A tag in the local list decides by the list (LocalPreAuthorize, LocalAuthListEnabled).
* A tag not in the list, presented while the CSMS is reachable and not accepted from the
  cache: Authorize.req; the answer goes to the agent's authorization cache
  (:meth:`edge_agent.auth.authorizer.Authorizer.remember`), then the one decision path
  decides — from the cache it just wrote.
* Offline, the decision path decides alone (LocalAuthorizeOffline).

An accepted tag is kept in clear (:func:`edge_agent.store.ocpp.remember_id_tag`): the
StartTransaction of the session it starts must carry it, even if sent after a restart.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable

from edge_agent.auth.authorizer import Authorizer, Credential, IdTag, Moment
from edge_agent.control.messages import Refused, StartAnswer
from edge_agent.control.ports import Present
from edge_agent.sessions.controller import Clocks
from edge_agent.store import auth as auth_store
from edge_agent.store import ocpp as queue
from edge_agent.store.db import translated
from protocols.enums import AuthorizationStatus
from protocols.errors import CredentialError
from protocols.idtags import hash_id_tag

log = logging.getLogger(__name__)

#: Asks the CSMS about a tag: its status, or None when it cannot be asked now.
AskCsms = Callable[[str], Awaitable[AuthorizationStatus | None]]


class OnlinePresent:
    """``await present(credential, connector)``, like :class:`edge_agent.decide.DecisionPath`."""

    def __init__(
        self,
        inner: Present,
        *,
        authorizer: Authorizer,
        conn: sqlite3.Connection,
        clocks: Clocks,
        ask: AskCsms,
        wake: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._authorizer = authorizer
        self._conn = conn
        self._clocks = clocks
        self._ask = ask
        self._wake = wake

    async def __call__(self, credential: Credential, connector: int) -> StartAnswer | Refused:
        if isinstance(credential, IdTag):
            await self._consult(credential.tag, connector)
        answer = await self._inner(credential, connector)
        # A started session's events are in the store: the OCPP queue reads them now.
        self._wake()
        return answer

    async def _consult(self, tag: str, connector: int) -> None:
        try:
            tag_hash = hash_id_tag(tag)
        except CredentialError:
            return  # the decision path refuses it, and records why
        at = Moment(self._clocks.wall(), self._clocks.mono(), self._clocks.synced())
        decision = self._authorizer.evaluate(
            IdTag(tag), connector=connector, at=at, connector_busy=False
        )
        with translated("local list not read"):
            listed = auth_store.list_entry(self._conn, tag_hash) is not None
        if not decision.accepted and not listed:
            status = await self._ask(tag)
            if status is not None:
                self._authorizer.remember(tag, status, now=at.now)
                decision = self._authorizer.evaluate(
                    IdTag(tag), connector=connector, at=at, connector_busy=False
                )
        if decision.accepted:
            with translated("id tag not kept"):
                queue.remember_id_tag(self._conn, tag)
