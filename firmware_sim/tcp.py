"""Modbus TCP: the same bus behind a TCP port, framed with pymodbus's :class:`FramerSocket`.

A Modbus TCP meter answers at network speed; only a ``slow`` fault delays it. A request for
a unit id nobody on the bus has is answered with exception 0x0B (gateway target device
failed to respond), as a TCP-to-RTU gateway does (Modbus Application Protocol v1.1b3 §7);
a silenced device (timeout, flapping) sends nothing and the client times out. CRC faults do
not apply: TCP frames have no CRC.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from types import TracebackType

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse

from firmware_sim.bus import BROADCAST, Bus
from firmware_sim.errors import EndpointError
from firmware_sim.serving import ConnectionTasks

log = logging.getLogger(__name__)


class TcpServer:
    """Listens on ``host:port`` (port 0: a free one; see :attr:`address`)."""

    def __init__(self, bus: Bus, host: str, port: int) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.address: tuple[str, int] = (host, port)
        self._server: asyncio.Server | None = None
        self._connections = ConnectionTasks()

    async def __aenter__(self) -> TcpServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise EndpointError(
                f"cannot listen on {self.host}:{self.port}: {reason}",
                endpoint=f"{self.host}:{self.port}",
            ) from exc
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._connections.close(self._server)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._connections.track():
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = FramerSocket(DecodePDU(is_server=True))
        buf = bytearray()
        try:
            while data := await reader.read(4096):
                buf += data
                while buf:
                    try:
                        used, request = framer.handleFrame(bytes(buf), 0, 0)
                    except ModbusIOException:
                        used, request = self._refuse_unknown_function(bytes(buf), writer, framer)
                    del buf[:used]
                    if request is None:
                        if used:
                            continue
                        break
                    answer = await self.bus.answer(request)
                    if answer is None:
                        if request.dev_id != BROADCAST and request.dev_id not in self.bus.devices:
                            response = ExceptionResponse(
                                request.function_code, ExcCodes.GATEWAY_NO_RESPONSE
                            )
                            response.dev_id = request.dev_id
                            response.transaction_id = request.transaction_id
                            writer.write(framer.buildFrame(response))
                        continue
                    if answer.slow_turnaround_s is not None:
                        await asyncio.sleep(answer.slow_turnaround_s)
                    writer.write(framer.buildFrame(answer.response))
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("modbus tcp client went away: %s", exc)
        except Exception:  # (one bad client must not stop the server)
            log.exception("modbus tcp connection failed")
        finally:
            writer.close()

    def _refuse_unknown_function(
        self, data: bytes, writer: asyncio.StreamWriter, framer: FramerSocket
    ) -> tuple[int, None]:
        """A whole frame whose function code pymodbus cannot decode: answer exception 1 from
        the addressed device (a real meter's answer) and skip the frame.

        MBAP header (Modbus Messaging on TCP/IP v1.0b §3.1.3): transaction id (2), protocol
        id (2), length (2, counting unit id and PDU), unit id (1), then the function code.
        """
        if len(data) < 8:
            return 0, None
        frame_bytes = 6 + int.from_bytes(data[4:6], "big")
        answer = self.bus.illegal_function(data[6], data[7])
        if answer is not None:
            answer.response.transaction_id = int.from_bytes(data[0:2], "big")
            writer.write(framer.buildFrame(answer.response))
        return min(frame_bytes, len(data)), None
