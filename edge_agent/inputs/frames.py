"""Pure decoders for what credential devices send: RDM6300 frames and Linux input events.

No I/O: bytes in, credentials (or reasons to ignore) out, so every malformed input is a
unit test.
"""

from __future__ import annotations

import functools
import operator
import string
import struct
from dataclasses import dataclass, field
from typing import Literal

# --- RDM6300 ---------------------------------------------------------------------------------

#: RDM6300 datasheet, "Output format" (9600 8N1): STX, 10 ASCII hex data characters
#: (version byte + 32-bit card number), 2 ASCII hex checksum characters (XOR of the 5 data
#: bytes), ETX — 14 bytes.
STX = 0x02
ETX = 0x03
FRAME_BYTES = 14


@dataclass(frozen=True, slots=True)
class BadFrame:
    reason: str
    raw: bytes


@dataclass
class Rdm6300Decoder:
    """Feed it bytes as they arrive; it returns the tags (10 hex characters) and the frames
    it refused. Garbage before an STX is skipped; a frame is never longer than 14 bytes."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[str | BadFrame]:
        out: list[str | BadFrame] = []
        self._buffer += data
        while True:
            start = self._buffer.find(STX)
            if start < 0:
                if self._buffer:
                    out.append(BadFrame("bytes outside a frame", bytes(self._buffer)))
                self._buffer.clear()
                return out
            if start > 0:
                out.append(BadFrame("bytes outside a frame", bytes(self._buffer[:start])))
                del self._buffer[:start]
            if len(self._buffer) < FRAME_BYTES:
                # Wait for the rest, unless an STX inside shows this frame was cut short.
                nxt = self._buffer.find(STX, 1)
                if nxt > 0:
                    out.append(BadFrame("frame cut short", bytes(self._buffer[:nxt])))
                    del self._buffer[:nxt]
                    continue
                return out
            frame = bytes(self._buffer[:FRAME_BYTES])
            nxt = frame.find(STX, 1)
            if nxt > 0:
                out.append(BadFrame("frame cut short", frame[:nxt]))
                del self._buffer[:nxt]
                continue
            del self._buffer[:FRAME_BYTES]
            out.append(parse_rdm6300(frame))


def parse_rdm6300(frame: bytes) -> str | BadFrame:
    """One 14-byte frame → the tag's 10 hex characters, or why not."""
    if len(frame) != FRAME_BYTES or frame[0] != STX or frame[-1] != ETX:
        return BadFrame("not STX + 12 characters + ETX", frame)
    try:
        text = frame[1:13].decode("ascii")
    except UnicodeDecodeError:
        return BadFrame("non-ASCII characters", frame)
    if any(c not in string.hexdigits for c in text):
        return BadFrame("non-hex characters", frame)
    data, checksum = bytes.fromhex(text[:10]), int(text[10:], 16)
    if functools.reduce(operator.xor, data) != checksum:
        return BadFrame("checksum mismatch", frame)
    return text[:10].upper()


# --- Linux input events (evdev) --------------------------------------------------------------

#: ``struct input_event`` in the native layout (linux/input.h: struct timeval, __u16 type,
#: __u16 code, __s32 value) — 24 bytes on 64-bit Linux, 16 on 32-bit Raspberry Pi OS.
INPUT_EVENT = struct.Struct("@llHHi")
EV_KEY = 0x01
KEY_DOWN = 1
KEY_LEFTSHIFT, KEY_RIGHTSHIFT = 42, 54
KEY_ENTER, KEY_KPENTER = 28, 96
KEY_BACKSPACE = 14

# linux/input-event-codes.h, US layout.
_PLAIN: dict[int, str] = {
    **{2 + i: str((i + 1) % 10) for i in range(10)},
    12: "-",
    13: "=",
    26: "[",
    27: "]",
    39: ";",
    40: "'",
    41: "`",
    43: "\\",
    51: ",",
    52: ".",
    53: "/",
    57: " ",
    **dict(zip(range(16, 26), "qwertyuiop", strict=True)),
    **dict(zip(range(30, 39), "asdfghjkl", strict=True)),
    **dict(zip(range(44, 51), "zxcvbnm", strict=True)),
    # The numeric keypad block (keypads send these).
    71: "7",
    72: "8",
    73: "9",
    75: "4",
    76: "5",
    77: "6",
    79: "1",
    80: "2",
    81: "3",
    82: "0",
    83: ".",
    55: "*",
    98: "/",
    74: "-",
    78: "+",
}
_SHIFTED: dict[int, str] = {
    **dict(zip(range(2, 12), "!@#$%^&*()", strict=True)),
    12: "_",
    13: "+",
    26: "{",
    27: "}",
    39: ":",
    40: '"',
    41: "~",
    43: "|",
    51: "<",
    52: ">",
    53: "?",
}

InputKind = Literal["rfid", "keypad", "qr"]
#: Longest line kept: a QR token is at most 4096 characters (protocols.tokens).
MAX_LINE_CHARS = 4200


@dataclass
class KeyDecoder:
    """Turns input events into finished lines: Enter ends a line; on a keypad ``#`` ends it
    too and ``*`` clears it (the usual PIN-pad convention); Backspace deletes."""

    kind: InputKind
    _partial: bytes = b""
    _shift: bool = False
    _line: list[str] = field(default_factory=list)

    def feed(self, data: bytes) -> list[str]:
        data = self._partial + data
        size = INPUT_EVENT.size
        whole = len(data) - len(data) % size
        self._partial = data[whole:]
        lines: list[str] = []
        for offset in range(0, whole, size):
            _, _, ev_type, code, value = INPUT_EVENT.unpack_from(data, offset)
            if ev_type != EV_KEY:
                continue
            if code in (KEY_LEFTSHIFT, KEY_RIGHTSHIFT):
                self._shift = value != 0
                continue
            if value != KEY_DOWN:
                continue  # key up or auto-repeat
            line = self._key(code)
            if line is not None:
                lines.append(line)
        return lines

    def _key(self, code: int) -> str | None:
        if code in (KEY_ENTER, KEY_KPENTER):
            return self._finish()
        if code == KEY_BACKSPACE:
            if self._line:
                self._line.pop()
            return None
        char = (_SHIFTED.get(code) if self._shift else None) or _PLAIN.get(code)
        if char is None:
            return None
        if self._shift and char.isalpha():
            char = char.upper()
        if self.kind == "keypad" and char == "#":
            return self._finish()
        if self.kind == "keypad" and char == "*":
            self._line.clear()
            return None
        if len(self._line) < MAX_LINE_CHARS:
            self._line.append(char)
        return None

    def _finish(self) -> str | None:
        line, self._line = "".join(self._line).strip(), []
        return line or None
