"""Provisioning requests and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cloud.schemas import WHITESPACE, RequestModel


class PairingCodeIssued(BaseModel):
    code: str
    expires_at: datetime


class ClaimRequest(RequestModel):
    #: Ten characters of Crockford's base32 (as issued: ``ABCDE-12345``); case, spaces,
    #: hyphens and O/0, I/L/1 are forgiven (cloud.devices.codes.normalize_code).
    code: str = Field(
        min_length=1,
        max_length=32,
        pattern=rf"^[{WHITESPACE}]*[ -]*([0-9A-TV-Za-tv-z][ -]*){{10}}[{WHITESPACE}]*$",
    )
    agent_version: str | None = Field(default=None, max_length=32)


class BrokerAccess(BaseModel):
    url: str
    username: str
    password: str
    client_id: str


class ClaimResponse(BaseModel):
    device_id: str
    broker: BrokerAccess
    #: PEM of the Ed25519 key that signs unlock tokens, and its key id (protocols.tokens).
    token_public_key_pem: str
    token_key_id: str
    #: The device's booking-PIN secret (32 random bytes, base64): the agent verifies keypad
    #: PINs with it offline (protocols.pins). Handed over once, here.
    pin_secret_b64: str
    #: Ready to write as the agent's cloud section.
    agent_config: dict[str, Any]


class DeviceState(BaseModel):
    """A device as its host sees it (after revoking, for one)."""

    device_id: str
    status: str
    revoked_at: datetime | None
