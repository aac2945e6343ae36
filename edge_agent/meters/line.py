"""How fast a meter can be read: the wire time of a full read on an RS-485 line. Pure.

Modbus over Serial Line v1.02, §2.5.1: an RTU character is 11 bits (start, 8 data, parity —
or a second stop bit without parity —, stop), whatever the parity. §2.5.1.1: frames are
separated by at least 3.5 character times of silence, fixed at 1.75 ms above 19200 baud.
A read (function 3 or 4) is an 8-byte request and a ``5 + 2 * count`` byte response.

The meter's own turnaround is not known in advance and comes on top, so this is a floor: a
poll interval below it cannot be kept on that line, whatever the agent does. Modbus TCP has
no such floor (a LAN round trip is well under a millisecond).
"""

from __future__ import annotations

from collections.abc import Iterable

BITS_PER_CHAR = 11
FAST_SILENCE_S = 0.00175
READ_REQUEST_BYTES = 8
#: The shortest poll interval accepted on Modbus TCP (seconds): 1 ms, far below any meter's
#: answer time, so the round trip, not the setting, paces a TCP meter.
MIN_TCP_POLL_INTERVAL_S = 0.001


def silence_s(baud: int) -> float:
    return FAST_SILENCE_S if baud > 19200 else 3.5 * BITS_PER_CHAR / baud


def rtu_read_time_s(block_counts: Iterable[int], baud: int, frame_gap_s: float = 0.0) -> float:
    """Wire time of reading blocks of ``block_counts`` registers at ``baud``, each exchange
    followed by the bus's ``frame_gap_s`` (e.g. SDM630's 3 blocks at 9600 baud: ~0.28 s)."""
    total = 0.0
    for count in block_counts:
        chars = READ_REQUEST_BYTES + 5 + 2 * count
        total += chars * BITS_PER_CHAR / baud + 2 * silence_s(baud) + frame_gap_s
    return total
