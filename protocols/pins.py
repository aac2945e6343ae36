"""Offline booking PINs: a 10-digit code a keypad accepts for one booking of one connector.

The cloud and the agent share a per-device secret (handed over at provisioning). Checking a
PIN needs no booking list, only the secret and the clock; what the agent must remember is
which PINs it has seen start a session (single use) and which the cloud revoked (a cancelled
booking), both by :func:`pin_ref`.

Layout (v2): ``CCC MMMMMMM``

* ``CCC`` (three digits, 000-959) is ``nonce * 48 + slots - 1``: ``slots`` is the booking's
  length in 15-minute slots (1-48, so 15 minutes to 12 hours, the booking rules' range) and
  ``nonce`` (0-19) tells apart bookings of the *same* connector and window — the cloud gives
  a booking the first nonce no earlier booking of that window holds, so the next driver who
  books a cancelled slot gets another PIN, and the cancelled one stays revoked;
* ``MMMMMMM`` is HMAC-SHA256(secret, ``cm-pin-v2|charger|connector|start_slot|slots|nonce``),
  dynamically truncated as in RFC 4226 §5.3, modulo 10^7.

The window is the booking's own: from its start (a 15-minute boundary; a time between
boundaries is rounded down) to its end (rounded up), nothing more. A driver may start
:data:`EARLY` before it; no start is accepted at or after its end (the next booking may begin
there). Verifying tries every start slot that puts "now" in that range — at most 49 for a
12-hour PIN — plus a look-around so a PIN whose window is over or not begun is Expired or
NotAtThisTime instead of Invalid. A random guess is accepted with probability at most
49 / 10^7 (5e-6, half v1's bound), so the agent still rate-limits keypad attempts.

A PIN never travels: the agent reports a session or decision started with one under
:func:`pin_ref`, and the cloud stores the same reference with the booking it issued the PIN
for, which is how a session started offline finds its booking and driver, and how a
revocation names the PIN.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from protocols.enums import AuthorizationStatus
from protocols.errors import CredentialError

SLOT_S = 900
#: The longest window: 48 slots, 12 hours (the longest booking).
MAX_SLOTS = 48
#: Bookings of one connector and window a PIN can tell apart.
NONCES = 20
CODE_DIGITS = 3
MAC_DIGITS = 7
PIN_DIGITS = CODE_DIGITS + MAC_DIGITS
MIN_SECRET_BYTES = 16
#: How long before its window a PIN is accepted (the API's unlock allows the same).
EARLY = timedelta(minutes=10)


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


def _mac(
    secret: bytes, charger_id: str, connector: int, *, start_slot: int, slots: int, nonce: int
) -> str:
    msg = f"cm-pin-v2|{charger_id}|{connector}|{start_slot}|{slots}|{nonce}".encode()
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
    secret: bytes,
    charger_id: str,
    connector: int,
    start: datetime,
    end: datetime,
    *,
    nonce: int,
) -> BookingPin:
    """The PIN for a booking of ``charger_id``/``connector`` from ``start`` to ``end``; the
    cloud gives each booking of the same connector and window its own ``nonce``."""
    if len(secret) < MIN_SECRET_BYTES:
        raise CredentialError(f"PIN secret must be at least {MIN_SECRET_BYTES} bytes")
    if not 0 <= nonce < NONCES:
        raise CredentialError(f"a PIN nonce is 0-{NONCES - 1}")
    start_s, end_s = _epoch_s(start), _epoch_s(end)
    if end_s <= start_s:
        raise CredentialError("booking end must be after its start")
    start_slot = start_s // SLOT_S
    end_slot = -(-end_s // SLOT_S)  # rounded up: the window covers the booking, no more
    slots = end_slot - start_slot
    if slots > MAX_SLOTS:
        raise CredentialError(f"a PIN window is at most {MAX_SLOTS * SLOT_S // 3600} hours")
    code = nonce * MAX_SLOTS + slots - 1
    pin = f"{code:0{CODE_DIGITS}d}" + _mac(
        secret, charger_id, connector, start_slot=start_slot, slots=slots, nonce=nonce
    )
    return BookingPin(pin, _at(start_slot * SLOT_S), _at(end_slot * SLOT_S))


def verify_pin(
    secret: bytes,
    charger_id: str,
    connector: int,
    pin: str,
    now: datetime,
    *,
    early: timedelta = EARLY,
    look_around: timedelta = timedelta(hours=12),
) -> PinCheck:
    """Check ``pin`` typed at ``now``: Accepted from ``early`` before its window until its
    end (exclusive). Never raises on what was typed."""
    if len(pin) != PIN_DIGITS or not pin.isascii() or not pin.isdigit():
        return PinCheck(AuthorizationStatus.INVALID, f"a PIN has {PIN_DIGITS} digits")
    code = int(pin[:CODE_DIGITS])
    if code >= NONCES * MAX_SLOTS:
        return PinCheck(AuthorizationStatus.INVALID, "PIN does not match this charger")
    nonce, slots = divmod(code, MAX_SLOTS)
    slots += 1
    length_s = slots * SLOT_S
    now_s = _epoch_s(now)
    early_s = int(early.total_seconds())
    around_slots = int(look_around.total_seconds()) // SLOT_S
    # Windows that accept at `now` start in (now - length, now + early]; the look-around
    # widens the range so a PIN for a past or future window is recognised as such.
    first_slot = (now_s - length_s) // SLOT_S + 1 - around_slots
    last_slot = (now_s + early_s) // SLOT_S + around_slots
    candidate = pin[CODE_DIGITS:]
    found: tuple[int, int] | None = None
    # Search newest first so an overlap (two windows both matching) prefers the current one.
    for slot in range(last_slot, first_slot - 1, -1):
        mac = _mac(secret, charger_id, connector, start_slot=slot, slots=slots, nonce=nonce)
        if hmac.compare_digest(mac, candidate):
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
            AuthorizationStatus.EXPIRED,
            f"booking ended {valid_until.isoformat()}",
            valid_from,
            valid_until,
        )
    if now_s < found[0] - early_s:
        return PinCheck(
            AuthorizationStatus.NOT_AT_THIS_TIME,
            f"booking starts {valid_from.isoformat()}",
            valid_from,
            valid_until,
        )
    return PinCheck(AuthorizationStatus.ACCEPTED, "valid PIN", valid_from, valid_until)
