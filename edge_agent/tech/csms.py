"""The technician's view of the OCPP uplink (edge_agent/ocpp/): ``doctor``'s "CSMS link"
check and the OCPP queue ``sync status`` shows.

With the agent running, the link's state is the agent's (``ocpp_status`` on the control
socket); with it stopped, ``doctor`` opens the WebSocket once as the charge point would (TLS,
Basic auth, subprotocol ``ocpp1.6``) and closes it without a BootNotification, so the CSMS
sees a connection and nothing else. The queue is read from the store, running or not.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.config import AgentSettings
from edge_agent.store.db import translated
from edge_agent.tech import storeview
from edge_agent.tech.checks import Check, Level


@dataclass(frozen=True, slots=True)
class CsmsFacts:
    configured: bool
    url: str = ""
    connected: bool = False
    registration: str | None = None
    error: str | None = None
    #: "agent" (its live link) or "probe" (a test connection by the CLI).
    via: str = "probe"


def csms_from_agent(settings: AgentSettings, answer: dict[str, Any] | None) -> CsmsFacts:
    if settings.ocpp is None:
        return CsmsFacts(configured=False)
    if answer is None:
        return CsmsFacts(
            configured=True, url=settings.ocpp.url, error="the agent did not say", via="agent"
        )
    return CsmsFacts(
        configured=True,
        url=settings.ocpp.url,
        connected=bool(answer.get("connected")),
        registration=answer.get("registration"),
        error=answer.get("last_error"),
        via="agent",
    )


async def probe_csms(settings: AgentSettings) -> CsmsFacts:
    """Connect once as the stopped agent would (its key: the one the CSMS last set, else
    the file's) and close at once."""
    ocpp = settings.ocpp
    if ocpp is None:
        return CsmsFacts(configured=False)
    from edge_agent.errors import OcppLinkError  # noqa: PLC0415
    from edge_agent.ocpp.keys import AUTHORIZATION_KEY_KV  # noqa: PLC0415
    from edge_agent.ocpp.link import Endpoint, open_link  # noqa: PLC0415

    key: str | None = None
    try:
        if ocpp.authorization_key_file is not None:
            key = ocpp.authorization_key_file.read_text("utf-8").strip()
    except OSError as exc:
        return CsmsFacts(
            configured=True, url=ocpp.url, error=f"cannot read ocpp.authorization_key_file: {exc}"
        )
    stored = _stored_key(settings.store.path, AUTHORIZATION_KEY_KV)
    endpoint = Endpoint(
        url=ocpp.url,
        charge_point_id=ocpp.charge_point_id or settings.device_id,
        security_profile=ocpp.security_profile,
        authorization_key=stored or key,
        ca_file=ocpp.ca_file,
        open_timeout_s=min(ocpp.call_timeout_s, 10.0),
        ping_interval_s=0,
    )
    try:
        async with open_link(endpoint):
            pass
    except OcppLinkError as exc:
        return CsmsFacts(configured=True, url=ocpp.url, error=str(exc))
    return CsmsFacts(configured=True, url=ocpp.url, connected=True)


def _stored_key(path: Path, kv: str) -> str | None:
    if not path.exists():
        return None
    conn = storeview.open_readonly(path)
    try:
        with translated("store query failed"):
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (kv,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def check_csms(f: CsmsFacts) -> Check:
    if not f.configured:
        return Check("CSMS link", Level.SKIP, "no [ocpp] table: no OCPP uplink")
    if f.connected and f.via == "agent" and f.registration != "Accepted":
        return Check(
            "CSMS link",
            Level.WARN,
            f"{f.url}: connected, BootNotification {f.registration or 'not answered yet'}",
            "the CSMS has not accepted this charge point yet: ask the operator to register "
            "its charge point id",
        )
    if f.connected:
        who = (
            "the agent is connected and registered"
            if f.via == "agent"
            else ("test connection accepted (TLS, credentials, ocpp1.6)")
        )
        return Check("CSMS link", Level.PASS, f"{f.url}: {who}")
    error = f.error or "not connected"
    return Check("CSMS link", Level.FAIL, f"{f.url}: {error}", _remedy(error))


def _remedy(error: str) -> str:
    lowered = error.lower()
    if "401" in lowered or "403" in lowered:
        return (
            "the CSMS refused the credentials: check charge_point_id and the "
            "AuthorizationKey with the operator"
        )
    if "certificate" in lowered or "ssl" in lowered:
        return "TLS failed: check ocpp.ca_file and that the URL's host matches the certificate"
    if "ocpp1.6" in lowered:
        return "the server did not agree to OCPP 1.6-J: check the URL with the operator"
    return "check the URL, the network and that the CSMS is up (see `logs`)"


@dataclass(frozen=True, slots=True)
class OcppQueue:
    """Transaction messages waiting in the store for the CSMS."""

    rows: int
    oldest_age_s: float | None
    by_action: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "oldest_age_s": self.oldest_age_s, "by_action": self.by_action}


def ocpp_queue(conn: sqlite3.Connection) -> OcppQueue:
    with translated("store query failed"):
        present = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ocpp_queue'"
        ).fetchone()[0]
        if not present:  # the store has not been opened by this agent version yet
            return OcppQueue(0, None, {})
        count, oldest = conn.execute("SELECT count(*), min(created_at) FROM ocpp_queue").fetchone()
        by_action = dict(
            conn.execute("SELECT action, count(*) FROM ocpp_queue GROUP BY action").fetchall()
        )
    age = None
    if oldest is not None:
        age = max(0.0, (datetime.now(UTC) - datetime.fromisoformat(str(oldest))).total_seconds())
    return OcppQueue(int(count), age, {str(k): int(v) for k, v in by_action.items()})
