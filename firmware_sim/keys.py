"""Keystroke injection for the keypad / QR scanner tests: Linux input events on a pty.

A USB keypad or a QR scanner in keyboard-wedge mode is a HID keyboard: the agent reads its
key events from ``/dev/input/eventN`` (evdev). Creating such a device needs ``/dev/uinput``,
which this environment does not have (no ``/dev/input`` at all), so the simulator writes the
very same records — ``struct input_event`` as the kernel lays it out on this machine
(``struct timeval``, ``__u16 type``, ``__u16 code``, ``__s32 value``; 24 bytes on 64-bit
Linux) — to a pseudo-terminal instead. An agent reading events from a file descriptor
decodes them with the code it uses for evdev.

Each character is: Shift down (if needed), key down, SYN, key up, SYN, Shift up — key codes
from ``linux/input-event-codes.h``, US layout (``#`` is Shift+3, ``*`` Shift+8, newline is
Enter).
"""

from __future__ import annotations

import struct
import time

from firmware_sim.errors import ConfigError

EV_SYN = 0x00
EV_KEY = 0x01
SYN_REPORT = 0
KEY_LEFTSHIFT = 42
KEY_DOWN = 1
KEY_UP = 0
#: struct input_event with native sizes (long tv_sec, long tv_usec, u16, u16, s32).
INPUT_EVENT = struct.Struct("@llHHi")

_UNSHIFTED = {
    **{str(d): 2 + (d - 1) for d in range(1, 10)},
    "0": 11,
    "-": 12,
    "=": 13,
    "\t": 15,
    "[": 26,
    "]": 27,
    "\n": 28,
    ";": 39,
    "'": 40,
    "`": 41,
    "\\": 43,
    ",": 51,
    ".": 52,
    "/": 53,
    " ": 57,
    **dict(zip("qwertyuiop", range(16, 26), strict=True)),
    **dict(zip("asdfghjkl", range(30, 39), strict=True)),
    **dict(zip("zxcvbnm", range(44, 51), strict=True)),
}
_SHIFTED = {
    **dict(zip("!@#$%^&*()", [*range(2, 11), 11], strict=True)),
    "_": 12,
    "+": 13,
    "{": 26,
    "}": 27,
    ":": 39,
    '"': 40,
    "~": 41,
    "|": 43,
    "<": 51,
    ">": 52,
    "?": 53,
    **{c.upper(): code for c, code in _UNSHIFTED.items() if c.isalpha()},
}


def key_for(char: str) -> tuple[int, bool]:
    """(key code, shift needed) for ``char``."""
    if char in _UNSHIFTED:
        return _UNSHIFTED[char], False
    if char in _SHIFTED:
        return _SHIFTED[char], True
    raise ConfigError(f"cannot type {char!r} on a US keyboard", field="keys")


def key_events(text: str) -> list[tuple[int, int, int]]:
    """The (type, code, value) events a keyboard sends to type ``text``."""
    events: list[tuple[int, int, int]] = []
    syn = (EV_SYN, SYN_REPORT, 0)
    for char in text:
        code, shift = key_for(char)
        if shift:
            events += [(EV_KEY, KEY_LEFTSHIFT, KEY_DOWN), syn]
        events += [(EV_KEY, code, KEY_DOWN), syn, (EV_KEY, code, KEY_UP), syn]
        if shift:
            events += [(EV_KEY, KEY_LEFTSHIFT, KEY_UP), syn]
    return events


def encode_events(events: list[tuple[int, int, int]], *, now_s: float | None = None) -> bytes:
    """``events`` as ``struct input_event`` records stamped with ``now_s`` (wall clock)."""
    stamp = time.time() if now_s is None else now_s
    sec, usec = int(stamp), int((stamp % 1) * 1_000_000)
    return b"".join(INPUT_EVENT.pack(sec, usec, t, c, v) for t, c, v in events)


def decode_events(data: bytes) -> list[tuple[int, int, int]]:
    """Inverse of :func:`encode_events` (drops the timestamps); for tests and tools."""
    size = INPUT_EVENT.size
    return [INPUT_EVENT.unpack_from(data, i)[2:] for i in range(0, len(data) - size + 1, size)]
