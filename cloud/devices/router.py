"""Device routes: an agent claims its identity; hosts issue pairing codes and revoke devices.

``POST /devices/claim``: the code is the credential (the agent has no account); attempts are
rate-limited per client address. ``POST /chargers/{id}/pairing-code`` and
``POST /devices/{id}/revoke`` are for the owning host or an admin: another host's charger or
device answers 404, as if it did not exist (ownership is decided by the scoped query, never
by comparing ids in the route).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from sqlalchemy import select

from cloud import ratelimit
from cloud.accounts.models import Host, Role
from cloud.chargers.access import editable_charger
from cloud.deps import Db, HostUser, State
from cloud.devices.models import Device, DeviceStatus
from cloud.devices.schemas import ClaimRequest, ClaimResponse, DeviceState, PairingCodeIssued
from cloud.devices.service import claim_device, issue_pairing_code, revoke_device, undo_claim
from cloud.errors import NotFound
from cloud.openapi import problems
from cloud.schemas import DeviceId, PathId

router = APIRouter(tags=["devices"])


@router.post("/devices/claim", responses=problems(400, 403, 429))
async def claim(body: ClaimRequest, request: Request, state: State) -> ClaimResponse:
    limits = state.settings.provisioning
    client = request.client.host if request.client else "unknown"
    await ratelimit.hit(
        state.redis,
        f"claim:{client}",
        limit=limits.claim_attempts_per_window,
        window_s=limits.claim_window_s,
        prefix=state.settings.redis.key_prefix,
    )
    response: ClaimResponse | None = None
    async with state.sessions() as db:
        try:
            async with db.begin():
                response = await claim_device(
                    db,
                    state.settings,
                    state.credentials,
                    state.token_key,
                    code=body.code,
                    agent_version=body.agent_version,
                    now=datetime.now(UTC),
                )
        except BaseException:
            # The commit failed after the broker learned the credentials: take them back.
            if response is not None:
                await undo_claim(state.credentials, response.device_id)
            raise
    return response


@router.post(
    "/chargers/{charger_id}/pairing-code",
    status_code=201,
    responses=problems(401, 403, 404, 429),
)
async def pairing_code(
    charger_id: PathId, principal: HostUser, state: State, db: Db
) -> PairingCodeIssued:
    """A one-time code binding the next agent that claims it to this charger (15 minutes).
    Issuing again is allowed (replacing the Pi); each code is single use."""
    limits = state.settings.provisioning
    await ratelimit.hit(
        state.redis,
        f"pairing:{principal.user_id}",
        limit=limits.claim_attempts_per_window,
        window_s=limits.claim_window_s,
        prefix=state.settings.redis.key_prefix,
    )
    charger = await editable_charger(db, principal, charger_id)
    return await issue_pairing_code(
        db, state.settings, host_id=charger.host_id, charger_id=charger.id, now=datetime.now(UTC)
    )


@router.post("/devices/{device_id}/revoke", responses=problems(401, 403, 404))
async def revoke(device_id: DeviceId, principal: HostUser, state: State, db: Db) -> DeviceState:
    """Cut the device off the broker at once (its credentials are removed). Revoking a
    revoked device changes nothing and answers the same."""
    # Locked on this first read: a second revocation at the same moment waits, then sees
    # the device revoked and changes nothing (revoke_device's own lock would hand back this
    # object without re-reading it).
    query = select(Device).where(Device.id == device_id).with_for_update(of=Device)
    if not principal.has(Role.ADMIN):
        query = query.join(Host, Host.id == Device.host_id).where(Host.user_id == principal.user_id)
    device = await db.scalar(query)
    if device is None:
        raise NotFound("device", device_id)
    if device.status is not DeviceStatus.REVOKED:
        await revoke_device(db, state.credentials, device_id=device_id, now=datetime.now(UTC))
    return DeviceState(
        device_id=device.id, status=device.status.value, revoked_at=device.revoked_at
    )
