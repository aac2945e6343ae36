"""``auth check``: what the agent would decide for a credential, and why — without deciding.

The same pure rules as the agent (:mod:`edge_agent.auth.decision`, :mod:`protocols.tokens`,
:mod:`protocols.pins`) over a read-only view of the store: nothing is written, so a token's
``jti`` is not used up, the cache's LRU order is untouched, and no decision is logged or
reported. What it cannot see is the keypad lockout, which lives in the running agent's
memory (``auth check`` says so for PINs).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta

from edge_agent.auth.authorizer import MALFORMED_TAG_REASON, MALFORMED_TAG_REF
from edge_agent.auth.decision import (
    AuthDecision,
    ListEntry,
    busy,
    decide_id_tag,
    decide_pin,
    decide_token,
    token_ref,
    unsynced,
)
from edge_agent.config import AgentSettings
from edge_agent.errors import InputError
from edge_agent.tech import storeview
from protocols.enums import AuthorizationStatus, CredentialKind
from protocols.errors import CredentialError
from protocols.idtags import hash_id_tag
from protocols.pins import pin_ref, verify_pin
from protocols.tokens import TokenVerifier, load_public_key

KINDS = ("auto", "tag", "token", "pin")


def guess_kind(credential: str) -> str:
    """A PASETO token starts ``v4.public.``; a booking PIN is 8 digits; else an id tag."""
    if credential.startswith("v4.public."):
        return "token"
    if re.fullmatch(r"\d{8}", credential):
        return "pin"
    return "tag"


def _verifier(settings: AgentSettings) -> TokenVerifier | None:
    keys = []
    for path in settings.auth.public_key_files:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except (OSError, CredentialError) as exc:
            raise InputError(f"auth.public_key_files: {path}: {exc}", field="auth") from exc
    return TokenVerifier(keys) if keys else None


def _pin_secret(settings: AgentSettings) -> bytes | None:
    path = settings.auth.pin_secret_file
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"auth.pin_secret_file: {path}: {exc}", field="auth") from exc


def check(
    conn: sqlite3.Connection,
    settings: AgentSettings,
    credential: str,
    *,
    kind: str,
    connector: int,
    now: datetime,
    clock_synced: bool,
    connector_busy: bool,
) -> AuthDecision:
    if kind == "auto":
        kind = guess_kind(credential)
    if kind == "tag":
        try:
            tag_hash = hash_id_tag(credential)
        except CredentialError:
            # The agent's own words and reference for it (never the presented value).
            return AuthDecision(AuthorizationStatus.INVALID, MALFORMED_TAG_REASON,
                                CredentialKind.ID_TAG, MALFORMED_TAG_REF)  # fmt: skip
        if connector_busy:
            return busy(CredentialKind.ID_TAG, tag_hash, connector)
        row = storeview.list_entry(conn, tag_hash)
        listed = None if row is None else ListEntry(
            AuthorizationStatus(row[0]), None if row[1] is None else datetime.fromisoformat(row[1])
        )  # fmt: skip
        cached = None
        if listed is None:
            cache = storeview.cache_entry(conn, tag_hash)
            if cache is not None and now < datetime.fromisoformat(cache[1]):
                cached = ListEntry(AuthorizationStatus(cache[0]))
        return decide_id_tag(tag_hash, listed, cached, now)
    if kind == "token":
        verifier = _verifier(settings)
        if verifier is None:
            return AuthDecision(AuthorizationStatus.INVALID, "no token key configured",
                                CredentialKind.TOKEN, token_ref(credential))  # fmt: skip
        if not clock_synced:
            return unsynced(CredentialKind.TOKEN, token_ref(credential))
        result = verifier.verify(
            credential, charger_id=settings.device_id, connector=connector, now=now,
            leeway=timedelta(seconds=settings.auth.token_leeway_s),
        )  # fmt: skip
        if result.accepted and result.claims is not None and connector_busy:
            return busy(CredentialKind.TOKEN, result.claims.jti, connector)
        fresh = None
        if result.accepted and result.claims is not None:
            fresh = not storeview.jti_used(conn, result.claims.jti)
        return decide_token(result, jti_fresh=fresh, token=credential)
    ref = pin_ref(credential, settings.device_id, connector)
    secret = _pin_secret(settings)
    if secret is None:
        return AuthDecision(AuthorizationStatus.INVALID, "no PIN secret provisioned",
                            CredentialKind.PIN, ref)  # fmt: skip
    if not clock_synced:
        return unsynced(CredentialKind.PIN, ref)
    pin = verify_pin(secret, settings.device_id, connector, credential, now)
    if pin.accepted and connector_busy:
        return busy(CredentialKind.PIN, ref, connector)
    return decide_pin(pin, ref)
