"""Authorization decisions, pure: what was presented + what the store holds → a status.

Order (OCPP 1.6 §3.5 "Local Authorization List" then "Authorization Cache"): an id tag is
looked up in the local list first, then the cache; a signed token is checked by signature,
binding, window, then single use; a PIN by the PIN scheme, then revocation and single use.
Every outcome is an :class:`~protocols.enums.AuthorizationStatus` with a reason a technician
can read. Nothing here raises on what a driver presents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from protocols.enums import AuthorizationStatus, CredentialKind
from protocols.pins import PinCheck
from protocols.tokens import TokenCheck

Status = AuthorizationStatus


@dataclass(frozen=True, slots=True)
class ListEntry:
    """A local-list or cache entry for one id-tag hash."""

    status: AuthorizationStatus
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """The answer to one credential: status, why, and what a session started by it carries.

    The agent's own verdict; its report to the cloud is the wire message
    :class:`protocols.messages.AuthDecision` (edge_agent/store/auth.py builds it).

    ``ref`` identifies the credential without its secret: the id-tag hash, the token's
    ``jti``, or a hash of the PIN. ``session_id`` is the id reserved, when the decision is
    recorded, for the session an accepted decision starts (the decision's report names it).
    """

    status: AuthorizationStatus
    reason: str
    kind: CredentialKind
    ref: str
    expires_at: datetime | None = None
    booking_id: str | None = None
    max_wh: int | None = None
    max_s: int | None = None
    session_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is AuthorizationStatus.ACCEPTED


def decide_id_tag(
    tag_hash: str, listed: ListEntry | None, cached: ListEntry | None, now: datetime
) -> AuthVerdict:
    """The local list wins over the cache; an entry past its ``expires_at`` is Expired."""
    kind = CredentialKind.ID_TAG
    for source, entry in (("local list", listed), ("cache", cached)):
        if entry is None:
            continue
        if entry.expires_at is not None and now >= entry.expires_at:
            return AuthVerdict(
                Status.EXPIRED,
                f"{source} entry expired {entry.expires_at.isoformat()}",
                kind,
                tag_hash,
            )
        return AuthVerdict(
            entry.status, f"{source}: {entry.status.value}", kind, tag_hash, entry.expires_at
        )
    return AuthVerdict(Status.UNKNOWN, "not in the local list or the cache", kind, tag_hash)


def token_ref(token: str) -> str:
    """A reference for a token whose claims could not be read (no ``jti`` to name it)."""
    return "tok-" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


def decide_token(check: TokenCheck, *, jti_fresh: bool | None, token: str) -> AuthVerdict:
    """``jti_fresh`` is whether the store could claim the ``jti`` (None: not asked, because
    the token failed before single use mattered)."""
    kind = CredentialKind.TOKEN
    claims = check.claims
    if claims is None:
        return AuthVerdict(check.status, check.reason, kind, token_ref(token))
    base = AuthVerdict(
        check.status,
        check.reason,
        kind,
        claims.jti,
        claims.exp,
        claims.booking_id,
        claims.max_wh,
        claims.max_s,
    )
    if not check.accepted:
        return base
    if not jti_fresh:
        return replayed(base)
    return base


def replayed(decision: AuthVerdict) -> AuthVerdict:
    """A valid token's decision once its ``jti`` (the decision's ``ref``) is found used."""
    return replace(decision, status=Status.REPLAYED, reason=f"token {decision.ref} already used")


def decide_pin(check: PinCheck, ref: str) -> AuthVerdict:
    return AuthVerdict(check.status, check.reason, CredentialKind.PIN, ref, check.valid_until)


def pin_replayed(decision: AuthVerdict, session_id: str) -> AuthVerdict:
    """A valid booking PIN that already started a session: a PIN starts one."""
    return replace(
        decision, status=Status.REPLAYED, reason=f"PIN already started session {session_id}"
    )


def revoked(decision: AuthVerdict) -> AuthVerdict:
    """A valid booking PIN the cloud revoked: its booking was cancelled or declined."""
    return replace(decision, status=Status.BLOCKED, reason="PIN revoked: its booking was cancelled")


def unsynced(kind: CredentialKind, ref: str) -> AuthVerdict:
    """Tokens and PINs are bound to a time window: a Pi whose clock has not reached NTP
    (no RTC; it may read 1970 or the last shutdown) cannot judge them."""
    return AuthVerdict(
        Status.CLOCK_UNSYNCED,
        "the clock is not synchronised; time-bound credentials wait",
        kind,
        ref,
    )


def busy(kind: CredentialKind, ref: str, connector: int) -> AuthVerdict:
    return AuthVerdict(
        Status.CONCURRENT_TX, f"connector {connector} already has a session", kind, ref
    )
