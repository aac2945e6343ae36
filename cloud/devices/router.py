"""``POST /devices/claim``: an agent trades a pairing code for its identity and credentials.

The code is the credential here (the agent has no account); attempts are rate-limited per
client address. Issuing codes and revoking devices are host/admin actions: their routes
arrive with authentication (the accounts issue) and call :mod:`cloud.devices.service`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from cloud import ratelimit
from cloud.deps import State
from cloud.devices.schemas import ClaimRequest, ClaimResponse
from cloud.devices.service import claim_device, undo_claim

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post("/claim")
async def claim(body: ClaimRequest, request: Request, state: State) -> ClaimResponse:
    limits = state.settings.provisioning
    client = request.client.host if request.client else "unknown"
    await ratelimit.hit(
        state.redis,
        f"claim:{client}",
        limit=limits.claim_attempts_per_window,
        window_s=limits.claim_window_s,
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
                undo_claim(state.credentials, response.device_id)
            raise
    return response
