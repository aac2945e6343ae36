"""The caller's notification settings and Web Push subscriptions (``/me/…``: always the
caller's own, from the token)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from cloud.deps import CurrentUser, Db, State
from cloud.notifications import service
from cloud.notifications.schemas import (
    NotificationSettingsIn,
    NotificationSettingsOut,
    PushSubscriptionIn,
    PushSubscriptionList,
    PushSubscriptionOut,
)
from cloud.openapi import links, problems
from cloud.schemas import PathId

router = APIRouter(tags=["notifications"])


@router.get("/me/notifications", responses=problems(401, 404))
async def get_notification_settings(
    principal: CurrentUser, db: Db, state: State
) -> NotificationSettingsOut:
    """Per kind of event, the channels the caller gets it on (``default``: never changed),
    which channels can reach them now, and the key a browser subscribes to push with."""
    return await service.settings_of(db, principal.user_id, state.settings)


@router.put("/me/notifications", responses=problems(401, 404))
async def put_notification_settings(
    body: NotificationSettingsIn, principal: CurrentUser, db: Db, state: State
) -> NotificationSettingsOut:
    """Choose the channels of the kinds named (``{"booking_confirmed": {"email": true,
    "sms": false, "push": true}, …}``; the others keep theirs); answers the whole settings,
    as ``GET`` does."""
    await service.update_settings(db, principal.user_id, body)
    return await service.settings_of(db, principal.user_id, state.settings)


@router.post(
    "/me/push-subscriptions",
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 503),
    openapi_extra=links(201, unsubscribe_push={"subscription_id": "$response.body#/id"}),
)
async def subscribe_push(
    body: PushSubscriptionIn, principal: CurrentUser, db: Db, state: State
) -> PushSubscriptionOut:
    """Store this browser's push subscription for the caller (the same endpoint again
    updates it). 422 for an endpoint that is not a known push service; 503 when the
    platform runs no push."""
    return await service.subscribe(db, principal.user_id, body, state.settings)


@router.get("/me/push-subscriptions", responses=problems(401))
async def list_push_subscriptions(principal: CurrentUser, db: Db) -> PushSubscriptionList:
    return PushSubscriptionList(items=await service.subscriptions(db, principal.user_id))


@router.delete(
    "/me/push-subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 404),
)
async def unsubscribe_push(subscription_id: PathId, principal: CurrentUser, db: Db) -> Response:
    await service.unsubscribe(db, principal.user_id, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
