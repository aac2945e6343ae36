"""systemd's notify protocol (sd_notify(3)), written by hand: one datagram to the socket named
in ``NOTIFY_SOCKET``. No dependency: the protocol is a line of text."""

from __future__ import annotations

import os
import socket


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    # A leading "@" names a socket in the abstract namespace (sd_notify(3)).
    return "\0" + path[1:] if path.startswith("@") else path


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``); False when
    not running under systemd or the socket is gone (never raises: systemd is optional)."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never block the event loop: a full receive queue drops this ping
            # (BlockingIOError), which systemd's watchdog then notices, rightly.
            sock.setblocking(False)  # noqa: FBT003 -- socket API
            sock.connect(address)
            sock.send(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd asked for (``WATCHDOG_USEC``), or None.

    ``WATCHDOG_PID`` set to another process means the watchdog is not ours.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
