"""What the charge point does for each call of the CSMS: one method per action, each given a
typed request (:mod:`edge_agent.ocpp.requests`) and answering the payload of its CALLRESULT,
plus, where the answer must go first, what to do after it has been sent (a remote start
runs after its Accepted, a triggered message after its TriggerMessage.conf).

Nothing here decides what the agent already decides elsewhere: a remote start is the control
layer's ``start`` with the idTag (the one decision path, with the CSMS asked about an unknown
tag first: :mod:`edge_agent.ocpp.present`), a remote stop the control layer's ``stop``, the
local list is the agent's own (:func:`edge_agent.store.auth.apply_auth_list_update`, tags
hashed as every other list entry), availability is the session machine's hold.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_agent.control import handlers
from edge_agent.control import messages as control
from edge_agent.control.ports import ConnectorPort, Present
from edge_agent.errors import StaleAuthListVersion, StoreError
from edge_agent.ocpp import requests as r
from edge_agent.ocpp.keys import GET_CONFIGURATION_MAX_KEYS, LOCAL_LIST_MAX, KeyStore
from edge_agent.store import auth as auth_store
from edge_agent.store import ocpp as queue
from edge_agent.store.db import transaction, translated
from protocols.enums import AuthListUpdateType, AuthorizationStatus, ConnectorStatus, StopReason
from protocols.errors import CredentialError
from protocols.idtags import hash_id_tag
from protocols.messages import AuthListEntry, AuthListUpdate

log = logging.getLogger(__name__)

Payload = dict[str, Any]
After = Callable[[], Awaitable[None]] | None


@dataclass(frozen=True, slots=True)
class UplinkActions:
    """What a call may ask of the uplink itself (:class:`edge_agent.ocpp.uplink.OcppUplink`)."""

    #: Send a message the CSMS asked for (TriggerMessage): action, connector or None.
    trigger: Callable[[str, int | None], Awaitable[None]]
    #: Close the link and connect again (a new AuthorizationKey).
    reconnect: Callable[[], None]
    #: End the sessions and restart the agent (Reset).
    reset: Callable[[str], Awaitable[None]]
    #: The queue has new session events to read (a session was started or stopped).
    wake: Callable[[], None]


class CsmsCalls:
    """``await calls.answer(request)`` → (CALLRESULT payload, what to do once it is sent)."""

    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        keys: KeyStore,
        connectors: Mapping[int, ConnectorPort],
        present: Present,
        uplink: UplinkActions,
        now: Callable[[], datetime],
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._connectors = connectors
        self._present = present
        self._uplink = uplink
        self._now = now

    async def answer(self, request: r.Request) -> tuple[Payload, After]:
        match request:
            case r.RemoteStartTransaction():
                return self._remote_start(request)
            case r.RemoteStopTransaction():
                return await self._remote_stop(request), None
            case r.ChangeAvailability():
                return await self._availability(request), None
            case r.ChangeConfiguration():
                return self._change_configuration(request)
            case r.GetConfiguration():
                return self._get_configuration(request), None
            case r.Reset():
                return {"status": "Accepted"}, lambda: self._uplink.reset(request.type)
            case r.TriggerMessage():
                return self._trigger(request)
            case r.ClearCache():
                with translated("cache not cleared"):
                    queue.clear_cache(self._conn)
                return {"status": "Accepted"}, None
            case r.UnlockConnector():
                # A contactor has no lock: there is nothing to unlock (OCPP 1.6 §5.18).
                return {"status": "NotSupported"}, None
            case r.DataTransfer():
                # No vendor extensions are defined for this charge point.
                return {"status": "UnknownVendorId"}, None
            case r.GetLocalListVersion():
                with translated("local list version not read"):
                    return {"listVersion": auth_store.auth_list_version(self._conn)}, None
            case r.SendLocalList():
                return self._send_local_list(request), None
        raise TypeError(f"no handler for {type(request).__name__}")

    # --- transactions -------------------------------------------------------------------

    def _free_connector(self, wanted: int | None) -> int | None:
        if wanted is not None:
            found = self._connectors.get(wanted)
            return wanted if found is not None and not _busy(found) else None
        return next((cid for cid, c in self._connectors.items() if not _busy(c)), None)

    def _remote_start(self, req: r.RemoteStartTransaction) -> tuple[Payload, After]:
        connector = self._free_connector(req.connector_id)
        if connector is None or req.charging_profile is not None:
            # No free connector, or a charging profile (Smart Charging is not offered).
            return {"status": "Rejected"}, None

        async def start() -> None:
            # The control layer's start: the one decision path (AuthorizeRemoteTxRequests).
            answer = await handlers.start(
                self._present, control.Start(connector=connector, id_tag=req.id_tag)
            )
            self._uplink.wake()
            detail = answer.error if isinstance(answer, control.Refused) else answer.detail
            log.info("OCPP remote start on connector %s: %s", connector, detail)

        return {"status": "Accepted"}, start

    async def _remote_stop(self, req: r.RemoteStopTransaction) -> Payload:
        with translated("transaction not looked up"):
            found = queue.session_of(self._conn, req.transaction_id)
        if found is None:
            return {"status": "Rejected"}
        session_id, connector = found
        port = self._connectors.get(connector)
        session = None if port is None else port.session
        if (
            port is None
            or session is None
            or not session.is_open
            or session.session_id != session_id
        ):
            return {"status": "Rejected"}
        answer = await handlers.stop(
            self._connectors, control.Stop(connector=connector, reason=StopReason.REMOTE)
        )
        self._uplink.wake()
        return {"status": "Accepted" if answer.ok else "Rejected"}

    # --- availability ---------------------------------------------------------------------

    async def _availability(self, req: r.ChangeAvailability) -> Payload:
        targets = list(self._connectors) if req.connector_id == 0 else [req.connector_id]
        if any(t not in self._connectors for t in targets):
            return {"status": "Rejected"}
        operative = req.type == "Operative"
        with translated("availability not stored"):
            held = queue.unavailable(self._conn)
            held = held - set(targets) if operative else held | set(targets)
            queue.set_unavailable(self._conn, held)
        scheduled = False
        for cid in targets:
            port = self._connectors[cid]
            if (
                not operative
                and _busy(port)
                and port.state.status is not ConnectorStatus.UNAVAILABLE
            ):
                # OCPP 1.6 §5.2: a transaction in progress finishes first (the uplink's
                # status loop applies the change once the connector is free).
                scheduled = True
                continue
            refused = await port.set_available(operative)
            if refused:
                log.warning("OCPP ChangeAvailability on connector %s: %s", cid, refused)
                scheduled = True
        return {"status": "Scheduled" if scheduled else "Accepted"}

    # --- configuration --------------------------------------------------------------------

    def _change_configuration(self, req: r.ChangeConfiguration) -> tuple[Payload, After]:
        status, reconnect = self._keys.change(req.key, req.value)
        log.info("OCPP ChangeConfiguration %s: %s", req.key, status.value)
        if reconnect and req.key == "AuthorizationKey":

            async def again() -> None:
                self._uplink.reconnect()

            return {"status": status.value}, again
        return {"status": status.value}, None

    def _get_configuration(self, req: r.GetConfiguration) -> Payload:
        names = self._keys.names if not req.key else req.key
        known: list[Payload] = []
        unknown: list[str] = []
        for name in names[: max(GET_CONFIGURATION_MAX_KEYS, len(self._keys.names))]:
            value = self._keys.value(name)
            if value is None:
                # Including AuthorizationKey: write-only (security whitepaper §3.1.3).
                unknown.append(name)
                continue
            known.append({"key": name, "readonly": self._keys.readonly(name), "value": value})
        answer: Payload = {"configurationKey": known}
        if unknown:
            answer["unknownKey"] = unknown
        return answer

    def _trigger(self, req: r.TriggerMessage) -> tuple[Payload, After]:
        if req.requested_message not in {
            "BootNotification",
            "Heartbeat",
            "MeterValues",
            "StatusNotification",
        }:
            return {"status": "NotImplemented"}, None
        if req.connector_id not in (None, 0) and req.connector_id not in self._connectors:
            return {"status": "Rejected"}, None
        message, connector = req.requested_message, req.connector_id
        return {"status": "Accepted"}, lambda: self._uplink.trigger(message, connector)

    # --- local list -------------------------------------------------------------------------

    def _send_local_list(self, req: r.SendLocalList) -> Payload:
        entries = req.local_authorization_list or []
        if len(entries) > LOCAL_LIST_MAX:
            return {"status": "Failed"}
        full = req.update_type == "Full"
        try:
            update = AuthListUpdate(
                version=req.list_version,
                update_type=AuthListUpdateType.FULL if full else AuthListUpdateType.DIFFERENTIAL,
                entries=[
                    AuthListEntry(
                        id_tag_hash=hash_id_tag(e.id_tag),
                        status=None
                        if e.id_tag_info is None
                        else AuthorizationStatus(e.id_tag_info.status),
                    )
                    for e in entries
                ],
            )
        except (ValueError, CredentialError):
            # A malformed tag (protocols.idtags), or a Full list that removes an entry.
            return {"status": "Failed"}
        try:
            with translated("local list not stored"), transaction(self._conn):
                auth_store.apply_auth_list_update(self._conn, update)
                for e in entries:
                    if e.id_tag_info is not None and e.id_tag_info.status == "Accepted":
                        queue.remember_id_tag(self._conn, e.id_tag)
        except StaleAuthListVersion:
            return {"status": "VersionMismatch"}
        except StoreError as exc:
            log.error("OCPP SendLocalList not stored: %s", exc)
            return {"status": "Failed"}
        return {"status": "Accepted"}


def _busy(port: ConnectorPort) -> bool:
    return port.state.status is not ConnectorStatus.AVAILABLE
