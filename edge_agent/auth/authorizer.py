"""The authorizer: runs the pure decision rules against the store, one transaction per
decision, so the lookup, the single-use ``jti`` claim, the decision log and the decision's
report in the outbox (``auth`` topic) commit together.

Every credential input (serial RFID, HID keyboards, keypad, QR scanner, LAN HTTP, a cloud
command) calls :meth:`Authorizer.authorize`: there is one decision path.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edge_agent.auth.decision import (
    AuthDecision,
    busy,
    decide_id_tag,
    decide_pin,
    decide_token,
    token_ref,
    unsynced,
)
from edge_agent.auth.lockout import Lockout
from edge_agent.errors import StoreError
from edge_agent.store import auth as auth_store
from edge_agent.store.db import transaction
from protocols.enums import AuthorizationStatus, CredentialKind
from protocols.errors import CredentialError
from protocols.ids import new_ulid
from protocols.idtags import ID_TAG_MAX_LEN, hash_id_tag
from protocols.pins import pin_ref, verify_pin
from protocols.tokens import TokenVerifier


@dataclass(frozen=True, slots=True)
class IdTag:
    tag: str


@dataclass(frozen=True, slots=True)
class Token:
    token: str


@dataclass(frozen=True, slots=True)
class Pin:
    pin: str


Credential = IdTag | Token | Pin

#: What a tag that does not normalise is recorded as: never the presented value itself.
MALFORMED_TAG_REF = "malformed"
MALFORMED_TAG_REASON = (
    f"malformed id tag: expected 1-{ID_TAG_MAX_LEN} letters or digits (value not recorded)"
)


@dataclass(frozen=True, slots=True)
class Moment:
    """When a decision is made: wall time (for windows), monotonic (for lockout), and whether
    the wall clock can be trusted."""

    now: datetime
    mono: float
    clock_synced: bool


class Authorizer:
    """One charger's authorization: id tags, unlock tokens and booking PINs, offline."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        charger_id: str,
        verifier: TokenVerifier | None,
        pin_secret: bytes | None,
        lockout: Lockout | None = None,
        token_leeway: timedelta = timedelta(seconds=30),
        cache_max_entries: int = 1000,
        cache_ttl: timedelta = timedelta(days=7),
    ) -> None:
        self._conn = conn
        self._charger_id = charger_id
        self._verifier = verifier
        self._pin_secret = pin_secret
        self._lockout = lockout or Lockout()
        self._leeway = token_leeway
        self._cache_max_entries = cache_max_entries
        self._cache_ttl = cache_ttl

    @property
    def lockout(self) -> Lockout:
        return self._lockout

    def authorize(
        self, credential: Credential, *, connector: int, at: Moment, connector_busy: bool
    ) -> AuthDecision:
        """Decide, record the decision, and return it. Never raises on what was presented."""
        try:
            with transaction(self._conn):
                return self.decide(credential, connector=connector, at=at,
                                   connector_busy=connector_busy)  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"authorization not recorded: {exc}") from exc

    def remember(self, tag: str, status: AuthorizationStatus, *, now: datetime) -> None:
        """Cache the cloud's answer for an id tag (OCPP's Authorization Cache): used when the
        tag is not in the local list and the cloud cannot be asked. Bounded, LRU, expiring."""
        try:
            with transaction(self._conn):
                auth_store.cache_put(
                    self._conn, hash_id_tag(tag), status, expires_at=now + self._cache_ttl,
                    max_entries=self._cache_max_entries,
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"cache entry not stored: {exc}") from exc

    def decide(
        self, credential: Credential, *, connector: int, at: Moment, connector_busy: bool
    ) -> AuthDecision:
        """Decide and record inside the caller's open transaction (its commit makes the
        ``jti`` claim and the log durable); :meth:`authorize` is this plus the commit."""
        if not self._conn.in_transaction:
            raise StoreError("decide() needs an open transaction; use authorize()")
        decision = self._decide(credential, connector, at, connector_busy)
        if decision.accepted:
            # The session this acceptance starts gets its id now, so the decision's report
            # (queued below, in this transaction) can name it.
            decision = replace(decision, session_id=new_ulid())
        auth_store.record_decision(
            self._conn, decision, device_id=self._charger_id, connector=connector,
            now=at.now, clock_synced=at.clock_synced,
        )  # fmt: skip
        return decision

    def _decide(
        self, credential: Credential, connector: int, at: Moment, connector_busy: bool
    ) -> AuthDecision:
        match credential:
            case IdTag(tag):
                try:
                    tag_hash = hash_id_tag(tag)
                except CredentialError:
                    # Not str(exc): it quotes the tag, and the reason is stored and sent.
                    return AuthDecision(
                        AuthorizationStatus.INVALID, MALFORMED_TAG_REASON, CredentialKind.ID_TAG,
                        MALFORMED_TAG_REF,
                    )  # fmt: skip
                if connector_busy:
                    return busy(CredentialKind.ID_TAG, tag_hash, connector)
                listed = auth_store.list_entry(self._conn, tag_hash)
                cached = None if listed else auth_store.cache_get(self._conn, tag_hash, now=at.now)
                return decide_id_tag(tag_hash, listed, cached, at.now)
            case Token(token):
                return self._token(token, connector, at, connector_busy)
            case Pin(pin):
                return self._pin(pin, connector, at, connector_busy)

    def _token(self, token: str, connector: int, at: Moment, connector_busy: bool) -> AuthDecision:
        ref = token_ref(token)
        if self._verifier is None:
            return AuthDecision(
                AuthorizationStatus.INVALID, "no token key configured", CredentialKind.TOKEN, ref
            )
        if not at.clock_synced:
            return unsynced(CredentialKind.TOKEN, ref)
        check = self._verifier.verify(
            token, charger_id=self._charger_id, connector=connector, now=at.now,
            leeway=self._leeway,
        )  # fmt: skip
        if check.accepted and connector_busy and check.claims is not None:
            # Busy is decided before the jti is claimed: the driver may retry once it is free.
            return busy(CredentialKind.TOKEN, check.claims.jti, connector)
        fresh = None
        if check.accepted and check.claims is not None:
            fresh = auth_store.claim_jti(
                self._conn, check.claims.jti, now=at.now, expires_at=check.claims.exp
            )
        return decide_token(check, jti_fresh=fresh, token=token)

    def _pin(self, pin: str, connector: int, at: Moment, connector_busy: bool) -> AuthDecision:
        ref = pin_ref(pin, self._charger_id, connector)
        if self._lockout.locked(at.mono):
            return AuthDecision(
                AuthorizationStatus.BLOCKED, "keypad locked after repeated wrong PINs",
                CredentialKind.PIN, ref,
            )  # fmt: skip
        if self._pin_secret is None:
            return AuthDecision(
                AuthorizationStatus.INVALID, "no PIN secret provisioned", CredentialKind.PIN, ref
            )
        if not at.clock_synced:
            return unsynced(CredentialKind.PIN, ref)
        check = verify_pin(self._pin_secret, self._charger_id, connector, pin, at.now)
        # Only a PIN that matches no window counts as a guess; a real but early/late PIN
        # is a driver with the wrong time, not an attacker.
        guessed = check.status is AuthorizationStatus.INVALID
        self._lockout = self._lockout.record(accepted=not guessed, mono=at.mono)
        if check.accepted and connector_busy:
            return busy(CredentialKind.PIN, ref, connector)
        return decide_pin(check, ref)
