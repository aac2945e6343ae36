"""The audit log: who did what to which entity, when, with the state before and after.

Append-only: migration 0014's trigger ``audit_log_append_only`` refuses UPDATE and DELETE of
a row, whoever asks (cloud/audit/service.py writes the rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_entity", "entity", "entity_id"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_user_id", "actor_user_id", "at"),
        Index("ix_audit_log_action", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    #: ``admin``, ``host``, ``driver`` (the role the actor acted in), ``system`` for jobs.
    actor_kind: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(64))
    #: Context beside the change itself (a reason, a note).
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    #: The entity's audited fields before and after the action (None: created / removed).
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: The HTTP request's id (``X-Request-ID``, cloud/requestid.py).
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(INET)
