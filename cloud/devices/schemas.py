"""Provisioning requests and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PairingCodeIssued(BaseModel):
    code: str
    expires_at: datetime


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=32)
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
    #: Ready to write as the agent's cloud section.
    agent_config: dict[str, Any]
