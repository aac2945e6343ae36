"""What the notification routes take and answer."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field, StrictBool, field_validator, model_validator

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
    email: StrictBool
    sms: StrictBool
    push: StrictBool


class NotificationSettingsIn(RequestModel):
    """The kinds to change, each by its name (so none can be listed twice); kinds left out
    keep their channels. At least one."""

    schema_rules: ClassVar[dict[str, Any]] = {"minProperties": 1}

    booking_confirmed: NotificationChoiceIn | None = None
    booking_pending: NotificationChoiceIn | None = None
    booking_approved: NotificationChoiceIn | None = None
    booking_declined: NotificationChoiceIn | None = None
    booking_cancelled: NotificationChoiceIn | None = None
    session_started: NotificationChoiceIn | None = None
    session_stopped: NotificationChoiceIn | None = None
    charger_offline: NotificationChoiceIn | None = None
    payout_paid: NotificationChoiceIn | None = None
    dispute_updated: NotificationChoiceIn | None = None

    @model_validator(mode="after")
    def _some(self) -> NotificationSettingsIn:
        if not self.chosen():
            raise ValueError("name at least one kind of event")
        return self

    def chosen(self) -> dict[EventKind, NotificationChoiceIn]:
        """The kinds given, by kind."""
        found = {kind: getattr(self, kind.value) for kind in EventKind}
        return {kind: choice for kind, choice in found.items() if choice is not None}


def _b64url(value: str, size: int, what: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64url") from exc
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


class PushKeysIn(RequestModel):
    #: The browser's P-256 ECDH public key, base64url: 65 bytes, an uncompressed point (its
    #: first byte 0x04, so its first character ``B``; its last character carries 4 bits and
    #: 2 zero bits). A point off the curve is found when a message is encrypted for it: the
    #: subscription is then dropped.
    p256dh: str = Field(pattern=r"^B[A-Za-z0-9_-]{85}[AEIMQUYcgkosw048]=?$")
    #: The browser's 16-byte authentication secret, base64url (the last character carries
    #: 2 bits and 4 zero bits).
    auth: str = Field(pattern=r"^[A-Za-z0-9_-]{21}[AQgw](==)?$")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        return _b64url(value, 65, "p256dh")

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
