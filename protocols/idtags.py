"""Id tags (RFID UIDs and the like): normalisation and the hash that travels instead.

An id tag is a bearer credential; neither the cloud's local-list updates nor the agent's
store carry it in the clear. Both sides hash the *normalised* tag, so ``04a2 1b`` typed by a
host and ``04A21B`` read by a reader are the same credential.
"""

from __future__ import annotations

import hashlib
import re

from protocols.errors import CredentialError

ID_TAG_MAX_LEN = 64
_SEPARATORS = re.compile(r"[\s:\-]")
_TAG = re.compile(r"[0-9A-Z]{1,64}")


def normalize_id_tag(tag: str) -> str:
    """Upper-case, separators (space, ``:``, ``-``) removed; raise if anything else is odd."""
    norm = _SEPARATORS.sub("", tag).upper()
    if not _TAG.fullmatch(norm):
        raise CredentialError(
            f"invalid id tag {tag!r}: expected 1-{ID_TAG_MAX_LEN} letters or digits "
            "(spaces, ':' and '-' are ignored)"
        )
    return norm


def hash_id_tag(tag: str) -> str:
    """The hex SHA-256 of the normalised tag under a domain prefix (64 hex characters)."""
    digest = hashlib.sha256(b"cm-idtag-v1:" + normalize_id_tag(tag).encode("ascii"))
    return digest.hexdigest()
