"""Give the memory of startup back once the agent is running.

Building the configuration and wire models (msgspec structs) and importing pymodbus, paho
and the signature library leave freed heap behind that glibc keeps mapped. On a Pi with
512 MiB beside other services the daemon's resident set should be its working set, so once
at startup the garbage is collected, the long-lived startup objects are frozen out of later
collections, and the freed heap is returned with ``malloc_trim`` (glibc; a no-op elsewhere).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_startup_memory() -> None:
    gc.collect()
    # Everything alive now lives as long as the process: later collections skip it, which
    # also keeps the collector from touching (and dirtying) those pages again.
    gc.freeze()
    return_freed_heap()


def return_freed_heap() -> None:
    """``malloc_trim(0)``: give the heap glibc holds free back to the system (also once the
    OCPP uplink's first connection is up: its TLS handshake and buffers leave freed heap)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: nothing to trim with
        return
    trim(0)
