"""The :class:`~cloud.audit.service.Actor` of a request, as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.audit.service import Actor
from cloud.deps import AdminUser, HostUser
from cloud.requestid import client_ip, request_id


def actor_of(principal: Principal, request: Request, kind: str) -> Actor:
    return Actor(
        user_id=principal.user_id,
        kind=kind,
        request_id=request_id(request),
        client_ip=client_ip(request),
    )


async def admin_actor(request: Request, admin: AdminUser) -> Actor:
    """The calling admin (the admin role is required)."""
    return actor_of(admin, request, "admin")


async def host_actor(request: Request, host: HostUser) -> Actor:
    """The calling host (the host role is required; an admin without it acts as ``admin``)."""
    return actor_of(host, request, "host" if host.has(Role.HOST) else "admin")


AdminActor = Annotated[Actor, Depends(admin_actor)]
HostActor = Annotated[Actor, Depends(host_actor)]
