"""Sending text messages (one-time codes) behind a small interface.

SMS goes through a paid third-party gateway, so only the fakes live here: they keep what
would have been sent and **check the gateway's contract** on the way, so code that passes
against them would pass against a real gateway:

* the destination is E.164 (``+`` and up to 15 digits);
* the text fits one SMS: at most 160 characters of the GSM 03.38 7-bit alphabet, where the
  extension characters (``{ } [ ] ~ \\ | ^ €`` and form feed) take two septets each. A text
  with any other character would be sent as UCS-2 (70 characters) or split: refused.

:class:`MemorySmsOutbox` keeps messages in a list (unit tests); :class:`RedisSmsOutbox` keeps
them in Redis (``cm:sms:outbox:<number>``, newest first, expiring), so every API process of a
development site shares one outbox and a developer can read a code with
``redis-cli LRANGE 'cm:sms:outbox:+919812345678' 0 0``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, cast

from redis.asyncio import Redis

from cloud.accounts.phones import E164
from cloud.redis_errors import redis_unavailable
from cloud.settings import Environment, Settings

#: One SMS, in septets.
SMS_MAX_SEPTETS = 160

# GSM 03.38 basic character set (one septet each), in code-point order of the table.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: an escape septet plus the character.
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")

#: How long the Redis outbox keeps a number's messages.
OUTBOX_TTL_S = 3600
#: Messages kept per number in the Redis outbox.
OUTBOX_MAX = 20


class SmsContractError(ValueError):
    """The message would not be accepted by an SMS gateway (a bug in the caller)."""


def gsm_septets(text: str) -> int:
    """The length of ``text`` in GSM 7-bit septets; :class:`SmsContractError` if a character
    is outside the GSM alphabet."""
    septets = 0
    for char in text:
        if char in _GSM_BASIC:
            septets += 1
        elif char in _GSM_EXTENDED:
            septets += 2
        else:
            raise SmsContractError(f"{char!r} is not in the GSM 03.38 alphabet")
    return septets


def check_sms(to: str, text: str) -> None:
    """Raise :class:`SmsContractError` unless ``to`` is E.164 and ``text`` fits one SMS."""
    if not E164.fullmatch(to):
        raise SmsContractError(f"{to!r} is not an E.164 number")
    if not text:
        raise SmsContractError("an SMS needs text")
    if (septets := gsm_septets(text)) > SMS_MAX_SEPTETS:
        raise SmsContractError(f"{septets} septets do not fit one SMS ({SMS_MAX_SEPTETS})")


@dataclass(frozen=True, slots=True)
class SentSms:
    to: str
    text: str
    sent_at: datetime


class SmsSender(Protocol):
    """Sends one text message to an E.164 number."""

    async def send(self, to: str, text: str) -> None: ...


@dataclass
class MemorySmsOutbox:
    """An :class:`SmsSender` that keeps every message in :attr:`sent`."""

    sent: list[SentSms] = field(default_factory=list)

    async def send(self, to: str, text: str) -> None:
        check_sms(to, text)
        self.sent.append(SentSms(to, text, datetime.now(UTC)))


@dataclass(frozen=True, slots=True)
class RedisSmsOutbox:
    """An :class:`SmsSender` that keeps messages in Redis, per number, newest first."""

    redis: Redis
    #: The deployment's ``redis.key_prefix``.
    prefix: str = "cm:"

    def key(self, to: str) -> str:
        return f"{self.prefix}sms:outbox:{to}"

    async def send(self, to: str, text: str) -> None:
        check_sms(to, text)
        record = json.dumps({"to": to, "text": text, "sent_at": datetime.now(UTC).isoformat()})
        with redis_unavailable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(self.key(to), record)
                pipe.ltrim(self.key(to), 0, OUTBOX_MAX - 1)
                pipe.expire(self.key(to), OUTBOX_TTL_S)
                await pipe.execute()

    async def messages(self, to: str) -> list[SentSms]:
        """What was sent to ``to``, newest first."""
        with redis_unavailable():
            raw = await cast("Awaitable[list[bytes]]", self.redis.lrange(self.key(to), 0, -1))
        records = [json.loads(item) for item in raw]
        return [SentSms(r["to"], r["text"], datetime.fromisoformat(r["sent_at"])) for r in records]


def configured_sms_sender(settings: Settings, redis: Redis) -> SmsSender | None:
    """The SMS gateway for ``settings``. Only the recording fake exists (a real gateway is a
    paid contract): development and test sites use it; elsewhere there is none (one-time
    codes answer 503, notifications skip the SMS channel)."""
    if settings.app.env in (Environment.DEVELOPMENT, Environment.TEST):
        return RedisSmsOutbox(redis, settings.redis.key_prefix)
    return None
