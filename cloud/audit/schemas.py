"""What ``GET /admin/audit`` answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor_user_id: str | None
    #: ``admin``, ``host``, ``driver`` or ``system``.
    actor_kind: str
    #: ``<entity>.<verb>``, e.g. ``payout.reject``, ``kyc.verify``, ``user.disable``.
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    data: dict[str, Any]
    request_id: str | None
    client_ip: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    #: Pass as ``cursor`` for the next (older) page; None on the last page.
    next_cursor: int | None
