"""Phone one-time codes: six digits, stored keyed-hashed in Redis with a lifetime and a
budget of wrong guesses.

One live code per number (``cm:otp:<number>``, a hash of ``h`` = HMAC-SHA256 of number and
code under ``app.secret_key``, and ``n`` = guesses so far). A new request replaces the code
and its guess counter, which is why requests are rate-limited per number too. Checking is one
Lua script (atomic): the guess is counted, and a right code is deleted, so it is single use
even against concurrent guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from cloud.redis_errors import redis_unavailable

OTP_DIGITS = 6


def new_otp() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def otp_message(code: str, ttl_s: int) -> str:
    """The SMS text (GSM alphabet, one SMS). The code comes first: phones offer to copy it."""
    return (
        f"{code} is your ChargeMitra code. It expires in {max(ttl_s // 60, 1)} min. "
        "Do not share it with anyone, including ChargeMitra staff."
    )


@dataclass(frozen=True, slots=True)
class OtpStore:
    redis: Redis
    secret: str
    ttl_s: int
    max_attempts: int
    #: The deployment's ``redis.key_prefix``.
    prefix: str = "cm:"

    def key(self, phone: str) -> str:
        return f"{self.prefix}otp:{phone}"

    def _digest(self, phone: str, code: str) -> str:
        return hmac.new(
            self.secret.encode(), f"{phone}:{code}".encode(), hashlib.sha256
        ).hexdigest()

    async def issue(self, phone: str) -> str:
        """A fresh code for ``phone`` (replacing any earlier one); returns it for sending."""
        code = new_otp()
        with redis_unavailable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key(phone))
                pipe.hset(self.key(phone), mapping={"h": self._digest(phone, code), "n": 0})
                pipe.expire(self.key(phone), self.ttl_s)
                await pipe.execute()
        return code

    async def check(self, phone: str, code: str) -> bool:
        """True once for the right code within its lifetime; a code is burnt after
        ``max_attempts`` guesses, right or wrong."""
        with redis_unavailable():
            verdict = await cast(
                "Awaitable[int]",
                self.redis.eval(
                    _CHECK_SCRIPT,
                    1,
                    self.key(phone),
                    self._digest(phone, code),
                    str(self.max_attempts),
                ),
            )
        return int(verdict) == 1


# Atomic in Redis: count the guess, burn the code past the budget, delete it when right (so
# it is single use). Answers 1 for a right code, 0 otherwise, -1 when there is no code.
_CHECK_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], 'h')
if not stored then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local budget = tonumber(ARGV[2])
if n > budget then redis.call('DEL', KEYS[1]) return 0 end
if stored == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
if n >= budget then redis.call('DEL', KEYS[1]) end
return 0
"""
