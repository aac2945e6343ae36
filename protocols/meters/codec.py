"""Register decoding and encoding: raw 16-bit words <-> physical values. Pure functions.

Decoding is what the agent does with a meter's answer; encoding is what the simulator (and
the golden tests) do to produce one. Both follow the map: data type, word order, scale and
the meter's "not available" marker.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from protocols.errors import DecodeError
from protocols.meters.planner import Block
from protocols.meters.quantities import Quantity, in_bounds
from protocols.meters.registermap import DataType, Register, RegisterMap, WordOrder


def _combine(words: Sequence[int], order: WordOrder) -> int:
    ordered = words if order is WordOrder.BIG else list(reversed(words))
    value = 0
    for word in ordered:
        value = (value << 16) | word
    return value


def _split(value: int, width: int, order: WordOrder) -> list[int]:
    words = [(value >> (16 * (width - 1 - i))) & 0xFFFF for i in range(width)]
    return words if order is WordOrder.BIG else list(reversed(words))


def decode_value(reg: Register, words: Sequence[int], order: WordOrder) -> float | None:
    """Decode one quantity from its ``reg.width`` words; None when the meter says n/a."""
    raw = _combine(words, order)
    if reg.not_available is not None and raw == reg.not_available:
        return None
    if reg.data_type is DataType.FLOAT32:
        value: float = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
        if not math.isfinite(value):
            return None
    else:
        bits = 16 * reg.width
        value = float(raw - (1 << bits) if reg.data_type.signed and raw >> (bits - 1) else raw)
    return value * reg.scale


def encode_value(reg: Register, value: float | None, order: WordOrder) -> list[int]:
    """Encode one physical value as the meter would hold it (None → the n/a marker)."""
    if value is None:
        if reg.data_type is DataType.FLOAT32:
            return _split(0x7FC00000, 2, order)  # quiet NaN
        marker = reg.not_available if reg.not_available is not None else 0
        return _split(marker, reg.width, order)
    raw_value = value / reg.scale
    if reg.data_type is DataType.FLOAT32:
        return _split(int.from_bytes(struct.pack(">f", raw_value), "big"), 2, order)
    bits = 16 * reg.width
    lo, hi = (
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        if reg.data_type.signed
        else (0, (1 << bits) - 1)
    )
    raw = min(max(round(raw_value), lo), hi)
    return _split(raw & ((1 << bits) - 1), reg.width, order)


def decode_registers(
    register_map: RegisterMap, start: int, words: Sequence[int]
) -> dict[Quantity, float]:
    """Decode every quantity lying wholly inside ``words`` (read from address ``start``).

    Quantities the meter reports as not available, and values outside the quantity's
    physical bounds (:data:`~protocols.meters.quantities.QUANTITY_BOUNDS`), are left out.
    """
    for offset, word in enumerate(words):
        if not 0 <= word <= 0xFFFF:
            raise DecodeError(
                f"{register_map.model}: register {start + offset} holds {word}, not a 16-bit word",
                model=register_map.model,
                address=start + offset,
            )
    end = start + len(words)
    result: dict[Quantity, float] = {}
    for reg in register_map.registers:
        if start <= reg.address and reg.end <= end:
            i = reg.address - start
            value = decode_value(reg, words[i : i + reg.width], register_map.word_order)
            # A value no installation can read (a garbage float32, a negative energy register)
            # is left out like "not available": the wire contract refuses it (issue 13).
            if value is not None and in_bounds(reg.quantity, value):
                result[reg.quantity] = value
    return result


def decode_blocks(
    register_map: RegisterMap, answers: Sequence[tuple[Block, Sequence[int]]]
) -> dict[Quantity, float]:
    """Decode the answers to a plan from :func:`~protocols.meters.planner.plan_blocks`: the
    quantities each block was planned for, not others its gap-bridging words happen to hold
    (a plan narrowed to some quantities yields only those)."""
    result: dict[Quantity, float] = {}
    for block, words in answers:
        if len(words) != block.count:
            raise DecodeError(
                f"{register_map.model}: block at {block.start} expected {block.count} "
                f"registers, got {len(words)}",
                model=register_map.model,
                address=block.start,
            )
        planned = set(block.quantities)
        decoded = decode_registers(register_map, block.start, words)
        result.update((q, v) for q, v in decoded.items() if q in planned)
    return result


def encode_registers(
    register_map: RegisterMap, values: Mapping[Quantity, float | None]
) -> dict[int, int]:
    """The meter's register image for ``values``: ``{address: word}`` for every register of
    every window (gaps hold the window's fill word; absent quantities their n/a marker)."""
    image: dict[int, int] = {}
    for window in register_map.windows:
        for addr in range(window.first, window.last + 1):
            image[addr] = window.fill
    for reg in register_map.registers:
        words = encode_value(reg, values.get(reg.quantity), register_map.word_order)
        for i, word in enumerate(words):
            image[reg.address + i] = word
    return image
