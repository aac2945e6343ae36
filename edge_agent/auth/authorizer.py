"""The authorizer: runs the pure decision rules against the store, in two steps.

*Evaluate* reads only — the local list, the cache, the used token ids — and checks the
token's signature or the PIN (and whether the cloud revoked it or it already started a
session): it answers what would be decided and why, and what acting on it would write.
*Commit* writes that: the single-use ``jti`` claim, the cache's bookkeeping (an expired entry
dropped, a hit counted for LRU), the decision log and the decision's report in the outbox
(``auth`` topic), and advances the keypad lockout. A booking PIN's single use is written
later, with the session start it is used for (:mod:`edge_agent.store.sessions`): an accepted
PIN whose start then fails (meter silent) is not used up.

Every credential input (serial RFID, HID keyboards, keypad, QR scanner, LAN HTTP, a cloud
command) calls :meth:`Authorizer.authorize`: there is one decision path, evaluate then commit
in one transaction, so they commit together. The field CLI's ``auth check`` calls only
:meth:`Authorizer.evaluate`, on a read-only connection: the same rules, nothing used up.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edge_agent.auth.decision import (
    AuthVerdict,
    busy,
    decide_id_tag,
    decide_pin,
    decide_token,
    pin_replayed,
    replayed,
    revoked,
    token_ref,
    unsynced,
)
from edge_agent.auth.lockout import Lockout
from edge_agent.errors import StoreError
from edge_agent.store import auth as auth_store
from edge_agent.store.db import transaction, translated
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


@dataclass(frozen=True, slots=True)
class _TokenUse:
    """A valid token's ``jti``, to record as used when its acceptance is acted on."""

    jti: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class _Evaluation:
    """A decision taken on reads alone, and what acting on it writes."""

    decision: AuthVerdict
    #: The accepted token's ``jti`` to claim (None: not an accepted token).
    token_use: _TokenUse | None = None
    #: The id-tag hash whose cache entry answered or had expired: the look-up's bookkeeping.
    cache_consulted: str | None = None
    #: The keypad's state after this PIN attempt (None: not a counted attempt).
    lockout: Lockout | None = None


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
    ) -> AuthVerdict:
        """Decide, record the decision, and return it. Never raises on what was presented."""
        with translated("authorization not recorded"), transaction(self._conn):
            return self.decide(
                credential, connector=connector, at=at, connector_busy=connector_busy
            )

    def remember(self, tag: str, status: AuthorizationStatus, *, now: datetime) -> None:
        """Cache the cloud's answer for an id tag (OCPP's Authorization Cache): used when the
        tag is not in the local list and the cloud cannot be asked. Bounded, LRU, expiring."""
        with translated("cache entry not stored"), transaction(self._conn):
            auth_store.cache_put(
                self._conn,
                hash_id_tag(tag),
                status,
                expires_at=now + self._cache_ttl,
                max_entries=self._cache_max_entries,
            )

    def evaluate(
        self, credential: Credential, *, connector: int, at: Moment, connector_busy: bool
    ) -> AuthVerdict:
        """What :meth:`authorize` would decide now, and why, without acting on it.

        Reads only, so ``conn`` may be read-only: no ``jti`` is used up, the cache's LRU order
        and expired entries are left as they are, nothing is logged or reported, the keypad
        lockout is consulted but not advanced, and no session id is reserved.
        """
        with translated("authorization not evaluated"):
            return self._evaluate(credential, connector, at, connector_busy).decision

    def decide(
        self, credential: Credential, *, connector: int, at: Moment, connector_busy: bool
    ) -> AuthVerdict:
        """Decide and record inside the caller's open transaction (its commit makes the
        ``jti`` claim and the log durable); :meth:`authorize` is this plus the commit."""
        if not self._conn.in_transaction:
            raise StoreError("decide() needs an open transaction; use authorize()")
        evaluation = self._evaluate(credential, connector, at, connector_busy)
        return self._commit(evaluation, connector, at)

    def _commit(self, evaluation: _Evaluation, connector: int, at: Moment) -> AuthVerdict:
        """Act on ``evaluation``, taken in the same (write-locked) transaction."""
        if evaluation.lockout is not None:
            # First: a PIN guess counts even when the store then fails to record it.
            self._lockout = evaluation.lockout
        decision = evaluation.decision
        if evaluation.cache_consulted is not None:
            # The look-up's bookkeeping, as cache_get does it: drop the entry if it has
            # expired, else count the hit as a use for LRU eviction.
            auth_store.cache_get(self._conn, evaluation.cache_consulted, now=at.now)
        if evaluation.token_use is not None:
            use = evaluation.token_use
            if not auth_store.claim_jti(self._conn, use.jti, now=at.now, expires_at=use.expires_at):
                # The claim is the authority. Under BEGIN IMMEDIATE nobody can claim the jti
                # between the evaluation's look-up and here; if someone did, it is a replay.
                decision = replayed(decision)
        if decision.accepted:
            # The session this acceptance starts gets its id now, so the decision's report
            # (queued below, in this transaction) can name it.
            decision = replace(decision, session_id=new_ulid())
        auth_store.record_decision(
            self._conn,
            decision,
            device_id=self._charger_id,
            connector=connector,
            now=at.now,
            clock_synced=at.clock_synced,
        )
        return decision

    def _evaluate(
        self, credential: Credential, connector: int, at: Moment, connector_busy: bool
    ) -> _Evaluation:
        match credential:
            case IdTag(tag):
                return self._id_tag(tag, connector, at, connector_busy)
            case Token(token):
                return self._token(token, connector, at, connector_busy)
            case Pin(pin):
                return self._pin(pin, connector, at, connector_busy)

    def _id_tag(self, tag: str, connector: int, at: Moment, connector_busy: bool) -> _Evaluation:
        try:
            tag_hash = hash_id_tag(tag)
        except CredentialError:
            # Not str(exc): it quotes the tag, and the reason is stored and sent.
            return _Evaluation(
                AuthVerdict(
                    AuthorizationStatus.INVALID,
                    MALFORMED_TAG_REASON,
                    CredentialKind.ID_TAG,
                    MALFORMED_TAG_REF,
                )
            )
        if connector_busy:
            return _Evaluation(busy(CredentialKind.ID_TAG, tag_hash, connector))
        listed = auth_store.list_entry(self._conn, tag_hash)
        if listed is not None:
            return _Evaluation(decide_id_tag(tag_hash, listed, None, at.now))
        held = auth_store.cache_peek(self._conn, tag_hash)
        if held is None:
            return _Evaluation(decide_id_tag(tag_hash, None, None, at.now))
        entry, cache_expires_at = held
        cached = entry if at.now < cache_expires_at else None
        return _Evaluation(decide_id_tag(tag_hash, None, cached, at.now), cache_consulted=tag_hash)

    def _token(self, token: str, connector: int, at: Moment, connector_busy: bool) -> _Evaluation:
        ref = token_ref(token)
        if self._verifier is None:
            return _Evaluation(
                AuthVerdict(
                    AuthorizationStatus.INVALID,
                    "no token key configured",
                    CredentialKind.TOKEN,
                    ref,
                )
            )
        if not at.clock_synced:
            return _Evaluation(unsynced(CredentialKind.TOKEN, ref))
        check = self._verifier.verify(
            token,
            charger_id=self._charger_id,
            connector=connector,
            now=at.now,
            leeway=self._leeway,
        )
        claims = check.claims
        if not check.accepted or claims is None:
            # A rejected token does not burn its jti: single use is not asked.
            return _Evaluation(decide_token(check, jti_fresh=None, token=token))
        if connector_busy:
            # Busy is decided before the jti is claimed: the driver may retry once it is free.
            return _Evaluation(busy(CredentialKind.TOKEN, claims.jti, connector))
        used = auth_store.jti_used(self._conn, claims.jti)
        decision = decide_token(check, jti_fresh=not used, token=token)
        if not decision.accepted:
            return _Evaluation(decision)
        return _Evaluation(decision, token_use=_TokenUse(claims.jti, claims.exp))

    def _pin(self, pin: str, connector: int, at: Moment, connector_busy: bool) -> _Evaluation:
        ref = pin_ref(pin, self._charger_id, connector)
        if self._lockout.locked(at.mono):
            return _Evaluation(
                AuthVerdict(
                    AuthorizationStatus.BLOCKED,
                    "keypad locked after repeated wrong PINs",
                    CredentialKind.PIN,
                    ref,
                )
            )
        if self._pin_secret is None:
            return _Evaluation(
                AuthVerdict(
                    AuthorizationStatus.INVALID,
                    "no PIN secret provisioned",
                    CredentialKind.PIN,
                    ref,
                )
            )
        if not at.clock_synced:
            return _Evaluation(unsynced(CredentialKind.PIN, ref))
        check = verify_pin(self._pin_secret, self._charger_id, connector, pin, at.now)
        if check.status is AuthorizationStatus.INVALID:
            # Only a PIN that matches no window counts as a guess.
            lockout = self._lockout.record(accepted=False, mono=at.mono)
            return _Evaluation(decide_pin(check, ref), lockout=lockout)
        decision = decide_pin(check, ref)
        if check.accepted:
            if auth_store.pin_revoked(self._conn, ref):
                decision = revoked(decision)
            elif (session_id := auth_store.pin_used_by(self._conn, ref)) is not None:
                decision = pin_replayed(decision, session_id)
            elif connector_busy:
                decision = busy(CredentialKind.PIN, ref, connector)
        if not decision.accepted:
            # A real PIN refused (early, late, used, revoked, busy) is not a guess, but it
            # must not clear the failures either: else typing one known old PIN between
            # guesses would make the lockout useless.
            return _Evaluation(decision)
        return _Evaluation(decision, lockout=self._lockout.record(accepted=True, mono=at.mono))
