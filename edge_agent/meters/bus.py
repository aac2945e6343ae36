"""One Modbus bus (an RS-485 line or a TCP peer): one client, one lock, a gap between frames.

The only module that imports pymodbus (3.11: ``device_id=`` keyword, ``retries`` and
``timeout`` on the client). Its errors are translated here, once, into
:class:`~edge_agent.errors.BusError` with a :class:`~edge_agent.errors.BusFault` ``kind``
the poller counts:

* ``timeout`` — no valid answer in time. pymodbus's RTU framer silently drops a frame whose
  CRC does not match (``framer/rtu.py``), so a corrupted answer is counted here too.
* ``exception`` — the device answered a Modbus exception (code in the message).
* ``garbage`` — an answer of the wrong length or type.
* ``disconnected`` — the port or host cannot be opened; reconnects back off exponentially
  with jitter (:mod:`edge_agent.backoff`, the edge's one retry schedule) so an unplugged
  adapter is not hammered.
"""

from __future__ import annotations

import asyncio
import logging
import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edge_agent.backoff import Backoff, Retries
from edge_agent.config import BusTiming, SerialLink, TcpLink
from edge_agent.errors import BusError, BusFault

log = logging.getLogger(__name__)

#: Reopening a port or host that failed: 0.25-0.5 s, doubling to 15-30 s.
RECONNECT = Backoff(initial_s=0.5, max_s=30.0)


def _propagate_cancellation(exc: ModbusException) -> None:
    """pymodbus 3.11 turns a CancelledError inside a request into ModbusIOException ("Request
    cancelled outside pymodbus", ``transaction/transaction.py``): a task cancelled at
    shutdown would take it for a timeout and poll on. Give the cancellation back."""
    if isinstance(exc.__cause__, asyncio.CancelledError):
        raise asyncio.CancelledError from exc


class ModbusBus:
    """An async context manager owning one pymodbus client; every request holds the lock.

    One request at a time per serial line (RS-485 is half duplex and the client is not
    safe for concurrent use), and ``frame_gap_s`` of silence after each answer: many meters
    need more than the 3.5 characters the Modbus RTU spec (v1.02 §2.5.1.1) requires.
    """

    def __init__(self, link: SerialLink | TcpLink, timing: BusTiming) -> None:
        self.link = link
        self.timing = timing
        self.key = link.bus_key
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._last_frame_end = 0.0
        self._reconnect_at = 0.0
        self._reconnects = Retries(RECONNECT)
        self.frames = 0

    def _make_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        # reconnect_delay=0: pymodbus's own reconnect loop is off; ours backs off with jitter.
        if isinstance(self.link, SerialLink):
            return AsyncModbusSerialClient(
                self.link.port,
                framer=FramerType.RTU,
                baudrate=self.link.baud,
                parity=self.link.parity,
                stopbits=self.link.stop_bits,
                timeout=self.timing.timeout_s,
                retries=self.timing.retries,
                reconnect_delay=0,
            )
        return AsyncModbusTcpClient(
            self.link.host,
            port=self.link.port,
            timeout=self.timing.timeout_s,
            retries=self.timing.retries,
            reconnect_delay=0,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._reconnect_at:
            raise BusError(
                f"{self.key} not connected (next try in {self._reconnect_at - now:.1f} s)",
                kind=BusFault.DISCONNECTED,
                device=self.key,
            )
        self.close()
        client = self._make_client()
        why = ""
        try:
            ok = await client.connect()
        except termios.error as exc:
            # pyserial raises termios.error (not an OSError) when the adapter refuses the line
            # settings, e.g. a parity a USB-RS485 bridge (or a pseudo-terminal) cannot do: a
            # config fault, retried with backoff like any other failure to open, never a crash
            # of the poll task; the technician is told which.
            ok, why = False, f": the port refuses its line settings ({exc})"
        except (OSError, ModbusException) as exc:
            ok = False
            log.debug("connect %s failed: %s", self.key, exc)
        if not ok:
            client.close()
            self._reconnect_at = now + self._reconnects.failed()
            raise BusError(
                f"cannot open {self.key}{why}", kind=BusFault.DISCONNECTED, device=self.key
            )
        self._reconnects.succeeded()
        self._client = client
        return client

    async def _gap(self) -> None:
        wait = self._last_frame_end + self.timing.frame_gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _frame(
        self,
        unit_id: int,
        address: int,
        what: str,
        request: Callable[[AsyncModbusSerialClient | AsyncModbusTcpClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        """One request/response on the bus: under the bus lock, after the inter-frame gap,
        counted; no answer (timeout, CRC) is a ``timeout`` BusError, an exception response an
        ``exception`` one."""
        async with self._lock:
            client = await self._connected()
            await self._gap()
            self.frames += 1
            try:
                response = await request(client)
            except ModbusException as exc:
                _propagate_cancellation(exc)
                raise BusError(
                    f"unit {unit_id}: no valid answer {what}: {exc}",
                    kind=BusFault.TIMEOUT,
                    device=self.key,
                    address=address,
                ) from exc
            finally:
                self._last_frame_end = time.monotonic()
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise BusError(
                f"unit {unit_id}: exception {code if code is not None else '?'} {what}",
                kind=BusFault.EXCEPTION,
                device=self.key,
                address=address,
                exception_code=code if isinstance(code, int) else None,
            )
        return response

    async def read_registers(
        self, unit_id: int, function_code: int, start: int, count: int
    ) -> Sequence[int]:
        """Read ``count`` registers (function 3 or 4) from ``start``: one frame."""

        def request(
            client: AsyncModbusSerialClient | AsyncModbusTcpClient,
        ) -> Awaitable[ModbusPDU]:
            if function_code == 4:
                return client.read_input_registers(start, count=count, device_id=unit_id)
            return client.read_holding_registers(start, count=count, device_id=unit_id)

        response = await self._frame(unit_id, start, f"reading {count} at {start}", request)
        registers = list(getattr(response, "registers", []))
        if len(registers) != count:
            raise BusError(
                f"unit {unit_id}: asked {count} registers at {start}, got {len(registers)}",
                kind=BusFault.GARBAGE,
                device=self.key,
                address=start,
            )
        return registers

    async def write_coil(self, unit_id: int, address: int, value: bool) -> None:
        await self._frame(
            unit_id,
            address,
            f"writing coil {address}",
            lambda client: client.write_coil(address, value, device_id=unit_id),
        )

    async def read_coil(self, unit_id: int, address: int) -> bool:
        response = await self._frame(
            unit_id,
            address,
            f"reading coil {address}",
            lambda client: client.read_coils(address, count=1, device_id=unit_id),
        )
        bits = getattr(response, "bits", None)
        if not bits:
            raise BusError(
                f"unit {unit_id}: empty answer reading coil {address}",
                kind=BusFault.GARBAGE,
                device=self.key,
                address=address,
            )
        return bool(bits[0])
