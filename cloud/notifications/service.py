"""A user's notification settings and push subscriptions: always the caller's own (the user
id comes from the token, never from the request)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.errors import DependencyUnavailable, InvalidRequest, NotFound
from cloud.notifications.channels import load_vapid, push_host_allowed
from cloud.notifications.models import NotificationPreference, PushSubscription
from cloud.notifications.preferences import DEFAULTS, choices
from cloud.notifications.schemas import (
    MAX_PUSH_SUBSCRIPTIONS,
    NotificationChoiceOut,
    NotificationSettingsIn,
    NotificationSettingsOut,
    PushSubscriptionIn,
    PushSubscriptionOut,
    ReachableOut,
)
from cloud.settings import Environment, Settings


def vapid_public_key(settings: Settings) -> str | None:
    """The application server key browsers subscribe with, or None without push."""
    vapid = load_vapid(settings.notifications)
    if vapid is None:
        return None
    raw = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def settings_of(
    db: AsyncSession, user_id: str, settings: Settings
) -> NotificationSettingsOut:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    stored = set(
        await db.scalars(
            select(NotificationPreference.kind).where(NotificationPreference.user_id == user_id)
        )
    )
    current = await choices(db, user_id)
    subscriptions = await db.scalar(
        select(func.count())
        .select_from(PushSubscription)
        .where(PushSubscription.user_id == user_id)
    )
    key = vapid_public_key(settings)
    n = settings.notifications
    sms_runs = settings.app.env in (Environment.DEVELOPMENT, Environment.TEST)
    return NotificationSettingsOut(
        preferences=[
            NotificationChoiceOut(
                kind=kind, email=c.email, sms=c.sms, push=c.push, default=kind not in stored
            )
            for kind, c in current.items()
        ],
        reachable=ReachableOut(
            email=bool(n.smtp_host and user.email),
            sms=sms_runs and user.phone is not None and user.phone_verified_at is not None,
            push=key is not None and bool(subscriptions),
        ),
        vapid_public_key=key,
    )


async def update_settings(db: AsyncSession, user_id: str, body: NotificationSettingsIn) -> None:
    rows = [
        {"user_id": user_id, "kind": kind, "email": c.email, "sms": c.sms, "push": c.push}
        for kind, c in body.chosen().items()
    ]
    stmt = insert(NotificationPreference).values(rows)
    await db.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id", "kind"],
            set_={
                "email": stmt.excluded.email,
                "sms": stmt.excluded.sms,
                "push": stmt.excluded.push,
                "updated_at": func.now(),
            },
        )
    )
    # A stored choice equal to the default is kept: the user chose it, and a later change of
    # the defaults must not change what they chose.
    assert set(DEFAULTS)  # every kind has a default (preferences.DEFAULTS)


def _out(sub: PushSubscription) -> PushSubscriptionOut:
    return PushSubscriptionOut(id=sub.id, endpoint=sub.endpoint, created_at=sub.created_at)


async def subscribe(
    db: AsyncSession, user_id: str, body: PushSubscriptionIn, settings: Settings
) -> PushSubscriptionOut:
    """Store the caller's browser subscription. The same endpoint again (the browser
    re-subscribing, or signed in as someone else now) updates the one row: a browser's
    messages go to whoever signed in on it last."""
    if settings.notifications.vapid_private_key_file is None:
        raise DependencyUnavailable("push", "web push is not configured")
    testing = settings.app.env in (Environment.DEVELOPMENT, Environment.TEST)
    if not push_host_allowed(body.endpoint, settings.notifications.push_hosts, allow_http=testing):
        raise InvalidRequest("the endpoint is not a known push service", field="endpoint")
    stmt = insert(PushSubscription).values(
        user_id=user_id, endpoint=body.endpoint, p256dh=body.keys.p256dh, auth=body.keys.auth
    )
    sub = await db.scalar(
        stmt.on_conflict_do_update(
            index_elements=["endpoint"],
            set_={
                "user_id": user_id,
                "p256dh": stmt.excluded.p256dh,
                "auth": stmt.excluded.auth,
                "updated_at": func.now(),
            },
        )
        .returning(PushSubscription)
        .execution_options(populate_existing=True)
    )
    assert sub is not None
    # Bounded fan-out: beyond MAX_PUSH_SUBSCRIPTIONS, the oldest subscriptions go.
    keep = (
        select(PushSubscription.id)
        .where(PushSubscription.user_id == user_id)
        .order_by(PushSubscription.updated_at.desc(), PushSubscription.id.desc())
        .limit(MAX_PUSH_SUBSCRIPTIONS)
    )
    await db.execute(
        delete(PushSubscription).where(
            PushSubscription.user_id == user_id, PushSubscription.id.not_in(keep)
        )
    )
    return _out(sub)


async def subscriptions(db: AsyncSession, user_id: str) -> list[PushSubscriptionOut]:
    rows = await db.scalars(
        select(PushSubscription)
        .where(PushSubscription.user_id == user_id)
        .order_by(PushSubscription.created_at, PushSubscription.id)
    )
    return [_out(s) for s in rows]


async def unsubscribe(db: AsyncSession, user_id: str, subscription_id: str) -> None:
    """Remove one of the caller's subscriptions (404 for anyone else's: no probing)."""
    gone = await db.scalar(
        delete(PushSubscription)
        .where(PushSubscription.id == subscription_id, PushSubscription.user_id == user_id)
        .returning(PushSubscription.id)
    )
    if gone is None:
        raise NotFound("push subscription", subscription_id)
