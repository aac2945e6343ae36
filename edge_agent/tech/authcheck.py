"""``auth check``: what the agent would decide for a credential, and why — without deciding.

It runs the agent's own evaluation step (:meth:`edge_agent.auth.authorizer.Authorizer.evaluate`)
over the store opened read-only: the same rules and look-ups as a real presentation, minus
the commit, so a token's ``jti`` is not used up, the cache's LRU order is untouched, and no
decision is logged or reported. What it cannot see is the keypad lockout, which lives in the
running agent's memory (``auth check`` says so for PINs).
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime, timedelta

from edge_agent.auth.authorizer import Authorizer, Credential, IdTag, Moment, Pin, Token
from edge_agent.auth.decision import AuthVerdict
from edge_agent.auth.keys import load_pin_secret, load_verifier
from edge_agent.config import AgentSettings
from edge_agent.errors import AgentError, InputError
from protocols.tokens import TokenVerifier

KINDS = ("auto", "tag", "token", "pin")


def guess_kind(credential: str) -> str:
    """A PASETO token starts ``v4.public.``; a booking PIN is 8 digits; else an id tag."""
    if credential.startswith("v4.public."):
        return "token"
    if re.fullmatch(r"\d{8}", credential):
        return "pin"
    return "tag"


def _key_material(settings: AgentSettings, kind: str) -> tuple[TokenVerifier | None, bytes | None]:
    """The agent's own loaders; only what ``kind`` needs is read (a missing PIN secret file
    does not stop a tag check)."""
    try:
        verifier = load_verifier(settings.auth) if kind == "token" else None
        pin_secret = load_pin_secret(settings.auth.pin_secret_file) if kind == "pin" else None
    except AgentError as exc:
        raise InputError(str(exc), field="auth") from exc
    return verifier, pin_secret


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
) -> AuthVerdict:
    """The agent's decision for ``credential`` at ``now``, evaluated over ``conn`` (which may
    be read-only) without acting on it. Only the key material the credential's kind needs is
    read."""
    if kind == "auto":
        kind = guess_kind(credential)
    presented: Credential
    if kind == "tag":
        presented = IdTag(credential)
    elif kind == "token":
        presented = Token(credential)
    else:
        presented = Pin(credential)
    verifier, pin_secret = _key_material(settings, kind)
    # A fresh keypad lockout: the agent's is in its memory, out of reach (the command says so).
    authorizer = Authorizer(
        conn,
        charger_id=settings.device_id,
        verifier=verifier,
        pin_secret=pin_secret,
        token_leeway=timedelta(seconds=settings.auth.token_leeway_s),
    )
    at = Moment(now, time.monotonic(), clock_synced)
    return authorizer.evaluate(presented, connector=connector, at=at, connector_busy=connector_busy)
