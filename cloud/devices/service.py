"""Device provisioning: issue pairing codes, claim them, revoke devices.

A claim is one transaction: the code is locked (``FOR UPDATE``), checked (exists, not
expired, not used), marked used, the device row created; the broker credentials are written
before the commit, and removed again if the commit fails, so a device never holds broker
access without its row nor a row without working credentials.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host
from cloud.chargers.models import Charger
from cloud.devices.broker_auth import BrokerCredentials, new_password
from cloud.devices.codes import hash_code, new_pairing_code, normalize_code
from cloud.devices.models import Device, DeviceStatus, PairingCode
from cloud.devices.schemas import BrokerAccess, ClaimResponse, PairingCodeIssued
from cloud.errors import CloudError, ConfigError, DeviceRevoked, NotFound, PairingCodeInvalid
from cloud.settings import Settings
from protocols.enums import MessageKind
from protocols.errors import CredentialError
from protocols.ids import new_ulid
from protocols.tokens import PrivateKey, key_id, load_private_key, load_public_key
from protocols.topics import topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenKey:
    pem: str
    key_id: str


def load_token_key(path: Path) -> TokenKey:
    """The unlock-token public key handed to agents (read at start, checked once)."""
    try:
        pem = path.read_bytes()
        return TokenKey(pem.decode(), key_id(load_public_key(pem)))
    except (OSError, CloudError, CredentialError, ValueError) as exc:
        raise ConfigError(
            f"token public key {path}: {exc}",
            variable="provisioning.token_public_key_file",
            value=str(path),
        ) from exc


def load_unlock_signer(path: Path | None, public: TokenKey) -> PrivateKey | None:
    """The private unlock-token key, checked to be the half of the published public key (a
    mismatch would make every token the API signs fail at every agent)."""
    if path is None:
        return None
    try:
        private = load_private_key(path.read_bytes())
    except (OSError, CloudError, CredentialError, ValueError) as exc:
        raise ConfigError(
            f"token private key {path}: {exc}",
            variable="provisioning.token_private_key_file",
            value=str(path),
        ) from exc
    if key_id(private.public_key()) != public.key_id:
        raise ConfigError(
            f"token private key {path} is not the pair of the configured public key",
            variable="provisioning.token_private_key_file",
            value=str(path),
        )
    return private


#: Bytes of a device's booking-PIN secret (protocols.pins wants at least 16).
PIN_SECRET_BYTES = 32


def new_device_id() -> str:
    # Lower case: device ids are ACL usernames and topic levels (protocols.ids).
    return f"cm-{new_ulid().lower()}"


async def issue_pairing_code(
    db: AsyncSession, settings: Settings, *, host_id: str, charger_id: str | None, now: datetime
) -> PairingCodeIssued:
    if await db.get(Host, host_id) is None:
        raise NotFound("host", host_id)
    if charger_id is not None:
        charger = await db.get(Charger, charger_id)
        if charger is None or charger.host_id != host_id:
            raise NotFound("charger", charger_id)
    code = new_pairing_code()
    expires_at = now + timedelta(seconds=settings.provisioning.pairing_code_ttl_s)
    db.add(
        PairingCode(
            code_hash=hash_code(
                normalize_code(code) or "", settings.app.secret_key.get_secret_value()
            ),
            host_id=host_id,
            charger_id=charger_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await db.flush()
    return PairingCodeIssued(code=code, expires_at=expires_at)


async def claim_device(
    db: AsyncSession,
    settings: Settings,
    credentials: BrokerCredentials,
    token_key: TokenKey,
    *,
    code: str,
    agent_version: str | None,
    now: datetime,
) -> ClaimResponse:
    """Claim ``code``; the caller commits ``db`` (and must call :func:`undo_claim` if that
    fails). Unknown, expired and used codes all raise the same :class:`PairingCodeInvalid`."""
    normalized = normalize_code(code)
    if normalized is None:
        raise PairingCodeInvalid
    secret = settings.app.secret_key.get_secret_value()
    pairing = await db.scalar(
        select(PairingCode)
        .where(PairingCode.code_hash == hash_code(normalized, secret))
        .with_for_update()
    )
    if pairing is None or pairing.claimed_at is not None or pairing.expires_at <= now:
        raise PairingCodeInvalid
    device_id = new_device_id()
    pin_secret = secrets.token_bytes(PIN_SECRET_BYTES)
    db.add(
        Device(
            id=device_id,
            host_id=pairing.host_id,
            agent_version=agent_version,
            pin_secret=pin_secret,
        )
    )
    await db.flush()
    pairing.claimed_at = now
    pairing.device_id = device_id
    if pairing.charger_id is not None:
        await db.execute(
            update(Charger).where(Charger.id == pairing.charger_id).values(device_id=device_id)
        )
    await db.flush()
    password = new_password()
    await credentials.set_user(device_id, password)
    log.info("device claimed", extra={"device_id": device_id, "host_id": pairing.host_id})
    broker = BrokerAccess(
        url=settings.mqtt.public_url, username=device_id, password=password, client_id=device_id
    )
    return ClaimResponse(
        device_id=device_id,
        broker=broker,
        token_public_key_pem=token_key.pem,
        token_key_id=token_key.key_id,
        pin_secret_b64=base64.b64encode(pin_secret).decode("ascii"),
        agent_config={
            "device_id": device_id,
            "broker_url": broker.url,
            "username": device_id,
            "client_id": device_id,
            # Exactly what the broker lets the device subscribe to (literal, no wildcard).
            "subscribe": [topic(device_id, MessageKind.CMD), topic(device_id, MessageKind.ACK)],
            "ack_topic": topic(device_id, MessageKind.ACK),
            "cmd_topic": topic(device_id, MessageKind.CMD),
            "token_key_ids": [token_key.key_id],
        },
    )


async def undo_claim(credentials: BrokerCredentials, device_id: str) -> None:
    """Remove the broker credentials of a claim whose transaction did not commit."""
    await credentials.remove_user(device_id)


async def revoke_device(
    db: AsyncSession, credentials: BrokerCredentials, *, device_id: str, now: datetime
) -> None:
    """Mark the device revoked and remove its broker credentials (effective at once)."""
    # populate_existing: a caller that read the device before this lock gets it re-read.
    device = await db.get(Device, device_id, with_for_update=True, populate_existing=True)
    if device is None:
        raise NotFound("device", device_id)
    if device.status is DeviceStatus.REVOKED:
        raise DeviceRevoked(device_id)
    device.status = DeviceStatus.REVOKED
    device.revoked_at = now
    device.online = False
    await db.flush()
    await credentials.remove_user(device_id)
    log.info("device revoked", extra={"device_id": device_id})
