"""Modbus RTU line timing: how long a poll takes on a real RS-485 wire. Pure functions.

Modbus over Serial Line v1.02, §2.5.1: an RTU character is 11 bits (start, 8 data, parity
— or a second stop bit when there is no parity —, stop), whatever the parity setting.
§2.5.1.1: frames are separated by a silence of at least 3.5 character times; above
19200 baud the spec fixes it at 1.750 ms. A poll is request + silence + the meter's
turnaround + response + silence; the simulator delays each answer by exactly this, and
``bench.sim_line_rate`` uses the same function for its computed baseline.
"""

from __future__ import annotations

#: Bits per RTU character, parity or not (§2.5.1).
BITS_PER_CHAR = 11
#: Inter-frame silence above 19200 baud (§2.5.1.1, "fixed value").
FAST_SILENCE_S = 0.00175
#: Request for function 3/4: address, function, start (2), count (2), CRC (2).
READ_REQUEST_BYTES = 8


def char_time_s(baud: int) -> float:
    """Wire time of one RTU character."""
    if baud <= 0:
        raise ValueError("baud must be positive")
    return BITS_PER_CHAR / baud


def silence_s(baud: int) -> float:
    """The 3.5-character inter-frame silence (fixed 1.75 ms above 19200 baud)."""
    return FAST_SILENCE_S if baud > 19200 else 3.5 * char_time_s(baud)


def frame_time_s(n_bytes: int, baud: int) -> float:
    """Wire time of a frame of ``n_bytes`` characters."""
    return n_bytes * char_time_s(baud)


def poll_time_s(request_bytes: int, response_bytes: int, baud: int, turnaround_s: float) -> float:
    """One request/response exchange: both frames, two silences and the meter's turnaround."""
    return frame_time_s(request_bytes + response_bytes, baud) + 2 * silence_s(baud) + turnaround_s


def read_response_bytes(register_count: int) -> int:
    """Response to function 3/4: address, function, byte count, 2 per register, CRC (2)."""
    return 5 + 2 * register_count


def read_poll_time_s(register_count: int, baud: int, turnaround_s: float) -> float:
    """One read of ``register_count`` registers (e.g. 20 at 9600 baud, 0 s: 68.75 ms)."""
    return poll_time_s(READ_REQUEST_BYTES, read_response_bytes(register_count), baud, turnaround_s)
