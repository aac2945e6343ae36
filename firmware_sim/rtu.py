"""Modbus RTU on a pseudo-terminal, with the timing of a real RS-485 line.

Frames are found with pymodbus's :class:`FramerRTU` (3.11) and answered by the
:class:`~firmware_sim.bus.Bus`. The line is half duplex and shared: one exchange at a time,
and each answer leaves the simulator only when the real line would have delivered it —
request on the wire, 3.5-character silence, the meter's turnaround, response on the wire,
silence (:func:`firmware_sim.line.poll_time_s`). A pty carries bytes instantly, so this
delay is what makes polling speed against the simulator physical.

What a real slave does with a bad frame, this one does too: a request with a wrong CRC, or
garbage, is dropped after the line falls silent and never answered (Modbus over Serial Line
v1.02 §2.5.1.2); a well-formed frame with a function code pymodbus cannot decode is
answered with exception 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pymodbus.exceptions import ModbusIOException, NotImplementedException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from firmware_sim.bus import Answer, Bus
from firmware_sim.line import frame_time_s, poll_time_s, silence_s
from firmware_sim.serial_line import PseudoTerminal

log = logging.getLogger(__name__)

#: The last stretch before a reply is due is waited out with a blocking sleep (see _send).
SPIN_S = 0.002

#: How long an incomplete frame may wait for more bytes before it is dropped as garbage.
#: Longer than 3.5 characters at any baud: a pty delivers a client's write in one piece,
#: but a scheduler hiccup between two writes must not cut a frame in two.
GARBAGE_SILENCE_S = 0.05
#: Smallest RTU frame: address, function, CRC (2).
MIN_FRAME_BYTES = 4


class RtuServer:
    """Serves ``bus`` on ``pty`` at ``baud`` with ``turnaround_s`` per answer."""

    def __init__(
        self,
        bus: Bus,
        pty: PseudoTerminal,
        *,
        baud: int,
        turnaround_s: float,
        device_bauds: dict[int, int] | None = None,
    ) -> None:
        self.bus = bus
        self.pty = pty
        self.baud = baud
        self.turnaround_s = turnaround_s
        #: Each device's own speed, checked against the speed the client set on the line
        #: (None: not checked, every device answers at any speed).
        self.device_bauds = device_bauds
        self._decoder = DecodePDU(is_server=True)
        self._framer = FramerRTU(self._decoder)
        self._busy_until = 0.0

    async def serve(self) -> None:
        """Answer requests until cancelled."""
        buf = bytearray()
        first_at = 0.0
        while True:
            got = await self.pty.read(GARBAGE_SILENCE_S if buf else None)
            if got is None:
                await self._on_leftover(bytes(buf), first_at)
                buf.clear()
                continue
            arrived_at, data = got
            if not buf:
                first_at = arrived_at
            buf += data
            while (frame := self._next_frame(buf)) is not None:
                used, request = frame
                del buf[:used]
                await self._exchange(request, used, first_at)
                first_at = asyncio.get_running_loop().time()

    def _next_frame(self, buf: bytearray) -> tuple[int, ModbusPDU] | None:
        """The first whole request in ``buf`` and its length, or None (wait for more).

        pymodbus's ``handleFrame`` assumes one frame per buffer and reports the whole buffer
        as used, so a request that follows hard on the heels of another (a broadcast, then a
        read) would be swallowed; the frame is cut to its own size first.
        """
        if len(buf) < MIN_FRAME_BYTES:
            return None
        size = 0
        pdu_class = self._decoder.lookupPduClass(bytes(buf))
        if pdu_class is not None:
            with contextlib.suppress(NotImplementedException, IndexError):
                size = pdu_class.calculateRtuFrameSize(bytes(buf))
        candidates = [bytes(buf[:size])] if 0 < size <= len(buf) else []
        candidates.append(bytes(buf))  # hunting: garbage before a frame
        for data in candidates:
            try:
                used, request = self._framer.handleFrame(data, 0, 0)
            except (ModbusIOException, ValueError, IndexError):
                return None  # CRC-valid but undecodable: judged at the silence
            if request is not None:
                return used, request
        return None

    def _hears(self, unit: int) -> bool:
        """Whether device ``unit`` can make out the request: a device set to another speed
        than the client's sees garbage and stays silent, as on a real line."""
        if self.device_bauds is None or unit not in self.device_bauds:
            return True
        return self.pty.line_baud() == self.device_bauds[unit]

    def _baud_of(self, unit: int) -> int:
        return self.baud if self.device_bauds is None else self.device_bauds.get(unit, self.baud)

    async def _exchange(self, request: ModbusPDU, request_bytes: int, arrived_at: float) -> None:
        start = max(arrived_at, self._busy_until)
        if not self._hears(request.dev_id):
            await self._send(None, request_bytes, start)
            return
        try:
            answer = await self.bus.answer(request)
        except Exception:  # a real meter answers "device failure"; it does not die
            log.exception("device failed on %s", request)
            failure = ExceptionResponse(request.function_code, 4)
            failure.dev_id = request.dev_id
            answer = Answer(failure)
        await self._send(answer, request_bytes, start, self._baud_of(request.dev_id))

    async def _on_leftover(self, data: bytes, arrived_at: float) -> None:
        """Bytes followed by silence that made no frame: garbage, a bad CRC, or a function
        code pymodbus does not know (answered with exception 1 when the CRC is good)."""
        if len(data) < MIN_FRAME_BYTES:
            return
        crc = int.from_bytes(data[-2:], "big")
        if not FramerRTU.check_CRC(data[:-2], crc):
            log.debug("dropped %d bytes with a bad CRC", len(data))
            return
        answer = self.bus.illegal_function(data[0], data[1]) if self._hears(data[0]) else None
        await self._send(
            answer, len(data), max(arrived_at, self._busy_until), self._baud_of(data[0])
        )

    async def _send(
        self, answer: Answer | None, request_bytes: int, start: float, baud: int | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        baud = self.baud if baud is None else baud
        if answer is None:
            # Silence still costs the request's time on the shared line.
            self._busy_until = start + frame_time_s(request_bytes, baud) + silence_s(baud)
            return
        frame = self._framer.buildFrame(answer.response)
        if answer.corrupt_crc:
            frame = frame[:-2] + bytes((frame[-2] ^ 0xA5, frame[-1] ^ 0x5A))
        turnaround_s = (
            self.turnaround_s if answer.slow_turnaround_s is None else answer.slow_turnaround_s
        )
        deadline = start + poll_time_s(request_bytes, len(frame), baud, turnaround_s)
        self._busy_until = deadline
        # The event loop's timers are only good to about a millisecond (epoll rounds its
        # timeout up to whole ms): a short frame at 19200 baud lasts ~15 ms, so that alone
        # is a 7 % error. Sleep in the loop until just before the deadline, then finish with
        # one precise blocking sleep (at most SPIN_S, during which the line is busy anyway).
        remaining = deadline - loop.time()
        if remaining > SPIN_S:
            await asyncio.sleep(remaining - SPIN_S)
            remaining = deadline - loop.time()
        if remaining > 0:
            time.sleep(remaining)  # noqa: ASYNC251 -- sub-millisecond precision, see above
        self.pty.write(frame)
