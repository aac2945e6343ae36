"""Async readers for credential devices: a UART (RDM6300) or an evdev node, by path.

Both are character devices read in non-blocking mode through the event loop. A device that
is missing or goes away (USB unplugged) is logged once at ERROR and retried with exponential
back-off and jitter (:mod:`edge_agent.backoff`); when it is back, once at INFO. Nothing here
raises for what a device does.

A tag or QR code read again within ``debounce_s`` is the same presentation and is not
presented again (:mod:`edge_agent.inputs.debounce`); keypad lines are typed on purpose and
are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import termios
import time
import tty
from collections.abc import Awaitable, Callable

from edge_agent.auth.authorizer import Credential, IdTag, Pin, Token
from edge_agent.backoff import Backoff, Retries
from edge_agent.errors import AgentError
from edge_agent.inputs.debounce import DEFAULT_DEBOUNCE_S, Debounce
from edge_agent.inputs.frames import BadFrame, InputKind, KeyDecoder, Rdm6300Decoder

log = logging.getLogger(__name__)

Present = Callable[[Credential, int], Awaitable[object]]

#: Reopening a credential device that is missing: 0.5-1 s, doubling to 30-60 s.
REOPEN = Backoff(initial_s=1.0, max_s=60.0)
#: linux/input.h: EVIOCGRAB = _IOW('E', 0x90, int). Grabbing keeps a keypad's keystrokes
#: from also reaching a console login on the Pi.
EVIOCGRAB = 0x40044590
_BAUD = {9600: termios.B9600}


def _open(path: str, baud: int | None) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if os.isatty(fd):
            # Raw 8N1 at the reader's speed: no echo, no line editing, no CR/LF mapping.
            # TCSANOW, not setraw's default TCSAFLUSH: a tag read while we were opening stays.
            tty.setraw(fd, termios.TCSANOW)
            if baud is not None:
                attrs = termios.tcgetattr(fd)
                attrs[4] = attrs[5] = _BAUD[baud]
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        else:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, EVIOCGRAB, 1)
    except (OSError, termios.error):
        os.close(fd)
        raise
    return fd


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def read_device(
    path: str, on_data: Callable[[bytes], Awaitable[None]], *, baud: int | None = None
) -> None:
    """Read ``path`` for ever, handing each chunk to ``on_data``; reopen with back-off."""
    retries = Retries(REOPEN)
    failing = False
    while True:
        try:
            fd = _open(path, baud)
        except (OSError, termios.error) as exc:
            if not failing:
                log.error("credential device %s unavailable: %s", path, exc)
                failing = True
            await asyncio.sleep(retries.failed())
            continue
        if failing:
            log.info("credential device %s is back", path)
            failing = False
        retries.succeeded()
        try:
            while True:
                await _readable(fd)
                try:
                    chunk = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise OSError("end of file")
                await on_data(chunk)
        except OSError as exc:
            log.error("credential device %s lost: %s", path, exc)
            failing = True
        finally:
            os.close(fd)


async def _present_safely(
    present: Present, credential: Credential, connector: int, path: str
) -> None:
    """A decision that fails (store error) is logged; the reader keeps reading."""
    try:
        await present(credential, connector)
    except AgentError as exc:
        log.error("credential from %s not decided: %s", path, exc)
    except Exception:
        # Whatever a card or a printed QR code makes the decision path do, it must not end
        # the reader task (and with it the agent's TaskGroup, stopping every session): a
        # defect, logged with its traceback, and the next credential is read.
        log.exception("credential from %s not decided: unexpected error", path)


async def run_rdm6300(
    path: str,
    connector: int,
    present: Present,
    *,
    baud: int = 9600,
    debounce_s: float = DEFAULT_DEBOUNCE_S,
    mono: Callable[[], float] = time.monotonic,
) -> None:
    """An RDM6300 reader on a UART: each good frame presents its tag on ``connector``, once
    per presentation (the reader repeats the frame while the card stays on it)."""
    decoder = Rdm6300Decoder()
    debounce = Debounce(debounce_s)

    async def on_data(chunk: bytes) -> None:
        for item in decoder.feed(chunk):
            if isinstance(item, BadFrame):
                log.warning("RFID reader %s: ignored %s: %r", path, item.reason, item.raw[:32])
            elif debounce.admit(item, mono()):
                await _present_safely(present, IdTag(item), connector, path)

    await read_device(path, on_data, baud=baud)


def credential_for(kind: InputKind, line: str) -> Credential:
    """What a line typed by a HID device is: a tag (RFID reader), a PIN (keypad), a token
    (QR scanner)."""
    if kind == "rfid":
        return IdTag(line)
    if kind == "keypad":
        return Pin(line)
    return Token(line)


async def run_hid(
    path: str,
    kind: InputKind,
    connector: int,
    present: Present,
    *,
    debounce_s: float = DEFAULT_DEBOUNCE_S,
    mono: Callable[[], float] = time.monotonic,
) -> None:
    """A keyboard-like HID device (evdev node): each finished line is a credential; an RFID
    or QR line repeated within ``debounce_s`` is one presentation."""
    decoder = KeyDecoder(kind)
    debounce = Debounce(0.0 if kind == "keypad" else debounce_s)

    async def on_data(chunk: bytes) -> None:
        for line in decoder.feed(chunk):
            if debounce.admit(line, mono()):
                await _present_safely(present, credential_for(kind, line), connector, path)

    await read_device(path, on_data)
