"""Which register reads a Modbus device could answer at all (a technician's raw read)."""

from __future__ import annotations

from edge_agent.errors import InputError

#: Modbus Application Protocol v1.1b3 §6.3/6.4: 1..125 registers per read.
MAX_READ = 125


def check_register_range(function_code: int, address: int, count: int) -> None:
    """:class:`InputError` for a request no Modbus device could answer."""
    if function_code not in (3, 4):
        raise InputError(
            f"function code {function_code}: use 3 (holding) or 4 (input registers)", field="fc"
        )
    if not 1 <= count <= MAX_READ:
        raise InputError(f"bad register range: count {count} outside 1..{MAX_READ}", field="count")
    if not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise InputError(
            f"bad register range: {address}..{address + count - 1} outside 0..65535",
            field="addr",
        )
