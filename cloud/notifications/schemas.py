"""What the notification routes take and answer."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from pydantic import BaseModel, Field, StrictBool, field_validator

from cloud.notifications.models import EventKind
from cloud.schemas import RequestModel

#: Push subscriptions kept per user (the oldest goes when a browser beyond it subscribes).
MAX_PUSH_SUBSCRIPTIONS = 10


class NotificationChoiceOut(BaseModel):
    kind: EventKind
    email: bool
    sms: bool
    push: bool
    #: True when the user never chose for this kind: the defaults apply.
    default: bool


class ReachableOut(BaseModel):
    """Which channels can reach this user now: a channel the platform runs, and the user's
    address for it (an e-mail address; a verified phone; at least one push subscription)."""

    email: bool
    sms: bool
    push: bool


class NotificationSettingsOut(BaseModel):
    preferences: list[NotificationChoiceOut]
    reachable: ReachableOut
    #: The VAPID public key (base64url, uncompressed P-256 point) browsers subscribe with
    #: (``pushManager.subscribe({applicationServerKey})``); absent when push is not run.
    vapid_public_key: str | None = None


class NotificationChoiceIn(RequestModel):
    kind: EventKind
    email: StrictBool
    sms: StrictBool
    push: StrictBool


class NotificationSettingsIn(RequestModel):
    """The kinds to change (each at most once); kinds not listed keep their channels."""

    preferences: list[NotificationChoiceIn] = Field(min_length=1, max_length=len(EventKind))

    @field_validator("preferences")
    @classmethod
    def _once_each(cls, value: list[NotificationChoiceIn]) -> list[NotificationChoiceIn]:
        kinds = [p.kind for p in value]
        if len(set(kinds)) != len(kinds):
            raise ValueError("each kind may be listed once")
        return value


def _b64url(value: str, size: int, what: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64url") from exc
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


class PushKeysIn(RequestModel):
    #: The browser's P-256 ECDH public key: 65 bytes (an uncompressed point), base64url.
    p256dh: str = Field(min_length=86, max_length=88, pattern=r"^[A-Za-z0-9_-]+={0,2}$")
    #: The browser's 16-byte authentication secret, base64url.
    auth: str = Field(min_length=22, max_length=24, pattern=r"^[A-Za-z0-9_-]+={0,2}$")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        _b64url(value, 65, "p256dh")
        if base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))[0] != 4:
            raise ValueError("p256dh must be an uncompressed point (0x04 …)")
        return value

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        return _b64url(value, 16, "auth")


class PushSubscriptionIn(RequestModel):
    """``PushSubscription.toJSON()`` as the browser gives it (``expirationTime`` may come
    along and is ignored: the push service answers 410 when a subscription ends)."""

    endpoint: str = Field(min_length=12, max_length=2048, pattern=r"^https?://[^\s/?#@]+/\S*$")
    keys: PushKeysIn
    # At most the largest integer a JavaScript number holds exactly (an epoch in ms): every
    # request number is bounded (tests/cloud/test_openapi_contract.py).
    expirationTime: int | None = Field(default=None, ge=0, le=2**53 - 1)  # noqa: N815 -- the browser's name


class PushSubscriptionOut(BaseModel):
    id: str
    endpoint: str
    created_at: datetime


class PushSubscriptionList(BaseModel):
    items: list[PushSubscriptionOut]
