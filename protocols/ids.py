"""Identifiers that cross the wire: device ids and message ids (ULIDs)."""

from __future__ import annotations

import os
import re
import time

from protocols.errors import TopicError

#: Device ids are topic levels and broker usernames: printable, no MQTT wildcards or level
#: separators, bounded so a topic stays short. Lower-case letters keep ACL patterns
#: (which match case-sensitively) free of look-alike ids.
DEVICE_ID_MAX_LEN = 64
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

# Crockford's base32, as the ULID spec uses: no I, L, O, U.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` unchanged if it is valid, else raise :class:`TopicError`.

    Valid: 1-64 characters of ``a-z 0-9 _ -``, starting with a letter or digit. This rules
    out ``+``, ``#`` and ``/`` (MQTT wildcards and level separator), ``$`` (broker-reserved
    topics) and anything invisible.
    """
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise TopicError(
            f"invalid device id {device_id!r}: expected 1-{DEVICE_ID_MAX_LEN} characters "
            "of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    return device_id


def new_ulid(timestamp_ms: int | None = None) -> str:
    """A new ULID: 48 bits of milliseconds since the epoch then 80 random bits.

    Sortable by creation time, unique without coordination; used for ``msg_id``, session
    ids and token ids. ``timestamp_ms`` is for tests and for devices whose clock is known
    to be wrong (they pass the best time they have).
    """
    ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"ULID timestamp out of range: {ms}")
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(value: str) -> bool:
    """Whether ``value`` is a canonical (upper-case) ULID string."""
    return bool(_ULID.fullmatch(value)) and value[0] <= "7"
