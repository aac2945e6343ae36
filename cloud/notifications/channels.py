"""The channels a notification goes out on, behind one small interface (:class:`Sender`).

* :class:`SmtpEmail` — e-mail through an SMTP relay (stdlib :mod:`smtplib` in a thread:
  one conversation per message, STARTTLS, implicit TLS or plain, optional login). The
  ``Message-ID`` is derived from the delivery's id, so if a message is ever sent twice (the
  process died after the relay accepted it, before its row was marked sent) mail clients
  can tell the copies for one.
* :class:`SmsText` — the SMS gateway the one-time codes use (:mod:`cloud.accounts.sms`).
* :class:`WebPush` — Web Push (RFC 8030) with VAPID (RFC 8292) and the aes128gcm payload
  encryption of RFC 8291, through ``pywebpush``; only to the push services named in
  ``notifications.push_hosts`` (the endpoint comes from a browser, i.e. from a user).

Each raises :class:`~cloud.errors.DeliveryFailed` (translated here, at the one boundary)
saying whether a retry can help. :func:`open_channels` opens the configured ones.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from py_vapid import Vapid
from pywebpush import WebPushException, webpush_async
from redis.asyncio import Redis

from cloud.accounts.sms import SmsContractError, SmsSender, configured_sms_sender
from cloud.errors import DeliveryFailed, DependencyUnavailable
from cloud.notifications.models import Channel
from cloud.settings import NotificationSettings, Settings, SmtpSecurity


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A browser's subscription, as ``PushSubscription.toJSON()`` gives it."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to one address. ``key`` is unique per message (the delivery's id)."""

    key: str
    address: str
    subject: str
    text: str
    html: str | None = None
    push: PushTarget | None = None


class Sender(Protocol):
    """Sends one message; raises :class:`DeliveryFailed` when the channel does not take it."""

    async def send(self, message: Outgoing) -> None: ...


# --- e-mail ------------------------------------------------------------------------------


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "chargemitra.local"


@dataclass(frozen=True, slots=True)
class SmtpEmail:
    settings: NotificationSettings

    def build(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.settings.smtp_from
        mail["To"] = message.address
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = f"<notification-{message.key}@{_domain(self.settings.smtp_from)}>"
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def _send_blocking(self, mail: EmailMessage) -> None:
        s = self.settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if s.smtp_security is SmtpSecurity.TLS:
            client = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.send_timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s)
        with client:
            if s.smtp_security is SmtpSecurity.STARTTLS:
                client.starttls(context=context)
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password.get_secret_value())
            client.send_message(mail)

    async def send(self, message: Outgoing) -> None:
        mail = self.build(message)
        try:
            await asyncio.to_thread(self._send_blocking, mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryFailed(
                "email", f"recipient refused ({codes})", permanent=all(c >= 500 for c in codes)
            ) from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx is a definite no (RFC 5321 section 4.2.1), except for the relay refusing us
            # as a client (authentication, 530/535): a configuration to fix, then retry.
            permanent = exc.smtp_code >= 500 and exc.smtp_code not in (530, 535, 554)
            raise DeliveryFailed(
                "email", f"relay answered {exc.smtp_code}", permanent=permanent
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Refused connection, timeout, dropped link, TLS failure: the relay may be back.
            raise DeliveryFailed("email", f"relay unreachable: {type(exc).__name__}") from exc


# --- SMS ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsText:
    sender: SmsSender

    async def send(self, message: Outgoing) -> None:
        try:
            await self.sender.send(message.address, message.text)
        except SmsContractError as exc:
            raise DeliveryFailed("sms", str(exc), permanent=True) from exc
        except DependencyUnavailable as exc:
            raise DeliveryFailed("sms", str(exc)) from exc


# --- Web Push ----------------------------------------------------------------------------


def push_host_allowed(endpoint: str, allowed: str, *, allow_http: bool) -> bool:
    """Whether ``endpoint`` is an https URL (http only when ``allow_http``: development and
    tests) on one of the ``allowed`` hosts (comma-separated; ``.example.com`` is any
    subdomain of it)."""
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    if not host or parts.username or parts.password:
        return False
    for entry in (e.strip().lower() for e in allowed.split(",")):
        if entry.startswith(".") and host.endswith(entry):
            return True
        if entry and host == entry:
            return True
    return False


class WebPush:
    """Sends one encrypted message per subscription with a fresh VAPID signature."""

    def __init__(self, settings: NotificationSettings, vapid: Vapid, *, allow_http: bool) -> None:
        self._settings = settings
        self._vapid = vapid
        self._allow_http = allow_http
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebPush:
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(self, message: Outgoing) -> None:
        target = message.push
        if target is None:
            raise DeliveryFailed("push", "no subscription", permanent=True)
        if not push_host_allowed(
            target.endpoint, self._settings.push_hosts, allow_http=self._allow_http
        ):
            raise DeliveryFailed("push", "endpoint not on an allowed push service", gone=True)
        subscription = {
            "endpoint": target.endpoint,
            "keys": {"p256dh": target.p256dh, "auth": target.auth},
        }
        try:
            await webpush_async(
                subscription,
                data=message.text,
                vapid_private_key=self._vapid,
                # A new dict each time: pywebpush writes aud and exp into it.
                vapid_claims={"sub": self._settings.vapid_subject},
                ttl=self._settings.push_ttl_s,
                headers={"Urgency": "normal"},
                timeout=aiohttp.ClientTimeout(total=self._settings.send_timeout_s),
                aiohttp_session=self._http,
            )
        except WebPushException as exc:
            status = getattr(exc.response, "status", None)
            if status in (404, 410):  # RFC 8030 section 7.3: the subscription expired
                raise DeliveryFailed("push", f"subscription gone ({status})", gone=True) from exc
            retry = status is None or status == 429 or status >= 500
            raise DeliveryFailed(
                "push", f"push service answered {status}", permanent=not retry
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed("push", f"push service unreachable: {type(exc).__name__}") from exc
        except ValueError as exc:
            # The browser's key is not a point on P-256 (the API checks only its shape): no
            # message can ever be encrypted for this subscription.
            raise DeliveryFailed(
                "push", "the subscription's key is not a P-256 point", gone=True
            ) from exc


def load_vapid(settings: NotificationSettings) -> Vapid | None:
    """The VAPID key from ``vapid_private_key_file``; None when push is not configured."""
    if settings.vapid_private_key_file is None:
        return None
    vapid: Vapid = Vapid.from_file(str(settings.vapid_private_key_file))
    return vapid


@asynccontextmanager
async def open_channels(settings: Settings, redis: Redis) -> AsyncIterator[dict[Channel, Sender]]:
    """The configured channels: e-mail when ``smtp_host`` is set, SMS when a gateway is
    (development and test sites: the recording outbox), push when a VAPID key is."""
    n = settings.notifications
    channels: dict[Channel, Sender] = {}
    async with AsyncExitStack() as stack:
        if n.smtp_host:
            channels[Channel.EMAIL] = SmtpEmail(n)
        sms = configured_sms_sender(settings, redis)
        if sms is not None:
            channels[Channel.SMS] = SmsText(sms)
        vapid = load_vapid(n)
        if vapid is not None:
            testing = settings.app.env.value in ("development", "test")
            channels[Channel.PUSH] = await stack.enter_async_context(
                WebPush(n, vapid, allow_http=testing)
            )
        yield channels
