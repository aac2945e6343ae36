"""A real SMTP server on loopback for the notification tests (aiosmtpd in its own thread):
it keeps every message it accepted, parsed, and can be stopped and started again on the same
port (a relay that goes down and comes back)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        # Python folds a long Subject whole onto the next line ("Subject:" CRLF SP text);
        # unfolding (RFC 5322 section 2.2.3) leaves that SP, which clients drop: so do we.
        return str(self.message["Subject"]).strip()

    def part(self, subtype: str) -> str:
        """The ``text/<subtype>`` body, decoded."""
        found = self.message.get_body(preferencelist=(subtype,))
        assert found is not None, f"no text/{subtype} part"
        content = found.get_content()
        assert isinstance(content, str)
        return content


@dataclass
class LocalSmtp:
    port: int
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's hook name
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def wait_for(self, count: int, *, timeout_s: float = 60) -> list[Received]:
        """The messages once at least ``count`` arrived (fails after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            while len(self.messages()) < count:  # noqa: ASYNC110 -- another thread appends
                await asyncio.sleep(0.05)
        return self.messages()
