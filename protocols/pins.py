"""Offline booking PINs: an 8-digit code a keypad accepts for one charger and time window.

The cloud and the agent share a per-device secret (handed over at provisioning). A PIN is
stateless: the agent needs no booking list to check it, only the secret and its clock.

Layout: ``D MMMMMMM``

* ``D`` (one digit) is the window length: 1, 2, 3, 4, 5, 6, 8, 10, 12 or 24 hours
  (:data:`DURATION_HOURS`, indexed by the digit). A booking gets the shortest window that
  covers it, starting at the booking's start rounded down to a 15-minute slot.
* ``MMMMMMM`` is HMAC-SHA256(secret, ``cm-pin-v1|charger|connector|start_slot|hours``),
  dynamically truncated as in RFC 4226 §5.3, modulo 10^7.

Verifying tries every start slot a window of that length could have and still cover "now"
(at most 96 for 24 h), plus a look-around so a PIN for a window that is over or not begun
gets Expired or NotAtThisTime instead of Invalid. A random guess succeeds with probability
about (slots tried) / 10^7 — about 1e-5 in the worst case — so the agent must also rate-limit
keypad attempts (a lockout after a few failures).

A PIN never travels: the agent reports a session or decision started with one under
:func:`pin_ref`, and the cloud computes the same reference for the PINs it hands out, which
is how an offline session finds its driver.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from protocols.enums import AuthorizationStatus
from protocols.errors import CredentialError

SLOT_S = 900
DURATION_HOURS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 24)
MAC_DIGITS = 7
PIN_DIGITS = 1 + MAC_DIGITS
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class BookingPin:
    pin: str
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class PinCheck:
    status: AuthorizationStatus
    reason: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.status is AuthorizationStatus.ACCEPTED


def _mac(secret: bytes, charger_id: str, connector: int, start_slot: int, hours: int) -> str:
    msg = f"cm-pin-v1|{charger_id}|{connector}|{start_slot}|{hours}".encode()
    digest = hmac.new(secret, msg, hashlib.sha256).digest()
    offset = digest[-1] & 0x0F
    code = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFF_FFFF
    return f"{code % 10**MAC_DIGITS:0{MAC_DIGITS}d}"


def pin_ref(pin: str, charger_id: str, connector: int) -> str:
    """The credential reference of ``pin`` at ``charger_id``/``connector``: ``pin-`` and 32
    hex digits of a SHA-256, so a decision log or a session row never holds a usable code.

    Both sides compute it (the agent when it reports, the cloud when it hands the PIN out);
    the value is on the wire, so the formula must not change.
    """
    digest = hashlib.sha256(f"cm-pin-ref|{charger_id}|{connector}|{pin}".encode())
    return "pin-" + digest.hexdigest()[:32]


def _epoch_s(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise CredentialError("PIN times must be timezone-aware")
    return int(moment.timestamp())


def _at(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def issue_pin(
    secret: bytes, charger_id: str, connector: int, start: datetime, end: datetime
) -> BookingPin:
    """The PIN for a booking of ``charger_id``/``connector`` from ``start`` to ``end``."""
    if len(secret) < MIN_SECRET_BYTES:
        raise CredentialError(f"PIN secret must be at least {MIN_SECRET_BYTES} bytes")
    start_s, end_s = _epoch_s(start), _epoch_s(end)
    if end_s <= start_s:
        raise CredentialError("booking end must be after its start")
    start_slot = start_s // SLOT_S
    needed_s = end_s - start_slot * SLOT_S
    for digit, hours in enumerate(DURATION_HOURS):
        if hours * 3600 >= needed_s:
            pin = str(digit) + _mac(secret, charger_id, connector, start_slot, hours)
            valid_from = start_slot * SLOT_S
            return BookingPin(pin, _at(valid_from), _at(valid_from + hours * 3600))
    raise CredentialError(f"a PIN window is at most {DURATION_HOURS[-1]} hours")


def verify_pin(
    secret: bytes,
    charger_id: str,
    connector: int,
    pin: str,
    now: datetime,
    *,
    early: timedelta = timedelta(minutes=10),
    look_around: timedelta = timedelta(hours=12),
) -> PinCheck:
    """Check ``pin`` typed at ``now``; ``early`` lets a driver start that much before the
    window. Never raises on what was typed."""
    if len(pin) != PIN_DIGITS or not pin.isascii() or not pin.isdigit():
        return PinCheck(AuthorizationStatus.INVALID, f"a PIN has {PIN_DIGITS} digits")
    hours = DURATION_HOURS[int(pin[0])]
    length_s = hours * 3600
    now_s = _epoch_s(now)
    early_s = int(early.total_seconds())
    around_slots = int(look_around.total_seconds()) // SLOT_S
    # Windows that cover `now` start in (now - length, now + early]; the look-around widens
    # the range so a PIN for a past or future window is recognised as such.
    first_slot = (now_s - length_s) // SLOT_S + 1 - around_slots
    last_slot = (now_s + early_s) // SLOT_S + around_slots
    candidate = pin[1:]
    found: tuple[int, int] | None = None
    # Search newest first so an overlap (two windows both matching) prefers the current one.
    for slot in range(last_slot, first_slot - 1, -1):
        if hmac.compare_digest(_mac(secret, charger_id, connector, slot, hours), candidate):
            start_s = slot * SLOT_S
            window = (start_s, start_s + length_s)
            if start_s - early_s <= now_s < window[1]:
                found = window
                break
            found = found or window
    if found is None:
        return PinCheck(AuthorizationStatus.INVALID, "PIN does not match this charger")
    valid_from, valid_until = _at(found[0]), _at(found[1])
    if now_s >= found[1]:
        return PinCheck(
            AuthorizationStatus.EXPIRED, f"window ended {valid_until.isoformat()}",
            valid_from, valid_until,
        )  # fmt: skip
    if now_s < found[0] - early_s:
        return PinCheck(
            AuthorizationStatus.NOT_AT_THIS_TIME, f"window starts {valid_from.isoformat()}",
            valid_from, valid_until,
        )  # fmt: skip
    return PinCheck(AuthorizationStatus.ACCEPTED, "valid PIN", valid_from, valid_until)
