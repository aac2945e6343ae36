"""A pseudo-terminal pair standing in for a serial port (RS-485 adapter, RFID reader).

Clients open :attr:`PseudoTerminal.path` (the slave side, e.g. ``/dev/pts/7``) exactly as
they would open ``/dev/ttyUSB0``; the simulator reads and writes the master side. The slave
is put in raw mode and kept open by the simulator, so bytes pass 8-bit clean (no echo, no
CR/LF translation) and a client may close and reopen the port without the master seeing
EOF/EIO (Linux returns EIO on the master while no slave fd is open).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from types import TracebackType

from firmware_sim.errors import EndpointError

_READ_SIZE = 4096
#: termios speed constants → baud rates (the standard RS-485 meter rates).
_BAUDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}


class PseudoTerminal:
    """Async reads and writes on the master side of a fresh pty pair."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = ""
        self._master = self._slave = -1
        self._chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> PseudoTerminal:
        try:
            self._master, self._slave = os.openpty()
        except OSError as exc:
            raise EndpointError(
                f"cannot create a pseudo-terminal: {exc}", endpoint=self.name
            ) from exc
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _on_readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self._master, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no slave is open: nothing to read
        if data:
            self._chunks.put_nowait((self._loop.time(), data))

    async def read(self, timeout_s: float | None = None) -> tuple[float, bytes] | None:
        """The next chunk the client wrote and the loop time it arrived; None on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._chunks.get()
        except TimeoutError:
            return None

    def line_baud(self) -> int | None:
        """The baud rate the client set on its end (a pty keeps the speed a client asks
        for, though it moves bytes at any speed; Linux forces 8 bits and no parity, so
        parity cannot be read back). None if it is not a standard rate."""
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except (OSError, termios.error):
            return None
        return _BAUDS.get(speed)

    def write(self, data: bytes) -> int:
        """Put ``data`` on the line; returns bytes written. What the pty cannot take (no
        client reading and its buffer full) is lost, as on a real line nobody listens to."""
        written = 0
        while written < len(data):
            try:
                written += os.write(self._master, data[written:])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        return written
