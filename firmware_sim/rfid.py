"""An RDM6300-style 125 kHz RFID reader: a serial device that prints each tag it sees.

Frame (RDM6300 datasheet, "Output format", 9600 8N1): 0x02, ten ASCII hex characters of the
tag's five data bytes (version + 32-bit card number), two ASCII hex characters of the
checksum (XOR of the five data bytes), 0x03 — 14 bytes.
"""

from __future__ import annotations

import functools
import operator
import string

from firmware_sim.errors import ConfigError

STX = 0x02
ETX = 0x03
TAG_HEX_CHARS = 10


def normalize_tag(tag: str) -> str:
    """The tag as the reader prints it: ten upper-case hex characters."""
    text = tag.strip().upper()
    if len(text) != TAG_HEX_CHARS or any(c not in string.hexdigits for c in text):
        raise ConfigError(
            f"RFID tag {tag!r} must be {TAG_HEX_CHARS} hex characters (5 bytes), e.g. 0A1B2C3D4E",
            field="tag",
        )
    return text


def rdm6300_frame(tag: str) -> bytes:
    """The 14-byte frame an RDM6300 sends when ``tag`` is held to it."""
    text = normalize_tag(tag)
    checksum = functools.reduce(operator.xor, bytes.fromhex(text))
    return bytes((STX,)) + text.encode("ascii") + f"{checksum:02X}".encode("ascii") + bytes((ETX,))
