"""The key material authorization reads from files: the cloud's token keys and the PIN secret.

One loader for the daemon and for ``auth check``, so the technician's answer rests on the
same keys (and the same refusals) as the agent's.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.config import AuthSettings
from edge_agent.errors import AgentError
from protocols.errors import CredentialError
from protocols.tokens import TokenVerifier, load_public_key

#: A shorter booking-PIN secret is guessable offline from one PIN and its window; the cloud
#: issues 32 bytes.
MIN_PIN_SECRET_BYTES = 16


def load_verifier(auth: AuthSettings) -> TokenVerifier | None:
    """A verifier over ``auth.public_key_files``, or None when none is configured."""
    keys = []
    for path in auth.public_key_files:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except (OSError, CredentialError) as exc:
            raise AgentError(f"auth.public_key_files: {path}: {exc}") from exc
    return TokenVerifier(keys) if keys else None


def load_pin_secret(path: Path | None) -> bytes | None:
    """The booking-PIN secret in ``path``, or None when none is configured."""
    if path is None:
        return None
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise AgentError(f"auth.pin_secret_file: {path}: {exc}") from exc
    if len(secret) < MIN_PIN_SECRET_BYTES:
        raise AgentError(f"auth.pin_secret_file: {path}: fewer than {MIN_PIN_SECRET_BYTES} bytes")
    return secret
