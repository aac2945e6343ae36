"""The delivery job: outbox events become messages, and messages go out, with retries.

**Expand** (:func:`expand_due`): events whose ``not_before`` has passed are taken with
``SELECT … FOR UPDATE SKIP LOCKED`` (so API processes running the job side by side share
them, never both take one), their recipient is found (named in the event, or a session's
driver — :func:`cloud.sessions.service.view_by_pk` — for ingest's session events), the text
rendered once per channel (:mod:`cloud.notifications.render`) and one
``notification_deliveries`` row written per channel the recipient chose
(:mod:`cloud.notifications.preferences`) and can be reached on: e-mail if they have an
address, SMS if their phone is verified, push per subscription — in the transaction that
marks the event expanded. A "charger offline" whose device is back online by then says
nothing.

**Deliver** (:func:`deliver_next`): one message per transaction, taken with
``FOR UPDATE SKIP LOCKED`` and held locked while it is sent: a second process skips it,
and a process killed mid-send releases it (its transaction rolls back) for the next round —
at least once, never lost. The row is marked ``sent``, or its attempt counted and the next
one set ``Backoff.delay_s`` later (:mod:`protocols.backoff`, exponential with equal jitter,
the rule the agent reconnects with) until ``max_attempts``; a permanent refusal (an address
refused, a push subscription gone — then deleted) fails it at once. A sender that raises
anything else (a bug) is a failed attempt all the same, so a poison message moves aside and
is given up by the same rules; only a database error rolls the attempt back.

:class:`Notifier` runs both every ``deliver_interval_s`` in the API's lifespan
(:func:`running_notifier`, beside the settle job) and in ``chargemitra-cloud notifications
deliver``, under the jobs' supervisor (:mod:`cloud.jobs`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import User
from cloud.db_errors import DATABASE_ERRORS, is_database_error
from cloud.devices.models import Device
from cloud.errors import CloudError, DeliveryFailed
from cloud.jobs import every, supervise
from cloud.notifications.channels import Outgoing, PushTarget, Sender, open_channels
from cloud.notifications.models import (
    Channel,
    DeliveryStatus,
    EventKind,
    NotificationDelivery,
    NotificationEvent,
    PushSubscription,
)
from cloud.notifications.preferences import choices
from cloud.notifications.render import Rendered, render
from cloud.sessions.service import view_by_pk
from cloud.settings import NotificationSettings, Settings
from cloud.state import AppState
from protocols.backoff import Backoff

log = logging.getLogger(__name__)

#: Events expanded per transaction.
EXPAND_BATCH = 50
_SESSION_KINDS = (EventKind.SESSION_STARTED, EventKind.SESSION_STOPPED)


async def _recipient(
    db: AsyncSession, event: NotificationEvent
) -> tuple[str, dict[str, Any]] | None:
    """Who hears of ``event`` and the facts to tell them, completed; None: nobody (any more)."""
    facts = dict(event.facts)
    user_id = event.user_id
    if event.kind in _SESSION_KINDS:
        view = await view_by_pk(db, int(event.subject_id))
        if view is None:
            return None
        user_id = view.owner_id
        facts["charger_name"] = view.charger.name if view.charger else view.device_id
    elif event.kind is EventKind.CHARGER_OFFLINE:
        device = await db.get(Device, event.subject_id)
        if device is None or device.online:
            return None  # back before the grace period ended: nothing to tell
    return (user_id, facts) if user_id is not None else None


def _rows(
    event: NotificationEvent,
    user: User,
    rendered: Rendered,
    wanted: set[Channel],
    subscriptions: list[PushSubscription],
) -> list[dict[str, Any]]:
    # Every row names every column: one multi-row INSERT takes one shape.
    base = {
        "event_id": event.id,
        "user_id": user.id,
        "subject": rendered.subject,
        "body_html": None,
    }
    rows = []
    if Channel.EMAIL in wanted and user.email:
        rows.append(
            base
            | {
                "channel": Channel.EMAIL,
                "address": user.email,
                "body_text": rendered.text,
                "body_html": rendered.html,
            }
        )
    if Channel.SMS in wanted and user.phone and user.phone_verified_at is not None:
        rows.append(
            base | {"channel": Channel.SMS, "address": user.phone, "body_text": rendered.sms}
        )
    if Channel.PUSH in wanted:
        rows.extend(
            base | {"channel": Channel.PUSH, "address": s.id, "body_text": rendered.push}
            for s in subscriptions
        )
    return rows


async def expand_due(
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[Channel, Sender],
    *,
    base_url: str,
    limit: int = EXPAND_BATCH,
) -> int:
    """Expand up to ``limit`` due events into deliveries; the number of events expanded."""
    async with sessions() as db, db.begin():
        events = list(
            await db.scalars(
                select(NotificationEvent)
                .where(NotificationEvent.expanded_at.is_(None))
                .where(NotificationEvent.not_before <= func.now())
                .order_by(NotificationEvent.not_before, NotificationEvent.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for event in events:
            event.expanded_at = datetime.now(UTC)
            found = await _recipient(db, event)
            if found is None:
                continue
            user = await db.get(User, found[0])
            if user is None or user.disabled_at is not None:
                continue
            choice = (await choices(db, user.id))[event.kind]
            wanted = {
                c
                for c, on in (
                    (Channel.EMAIL, choice.email),
                    (Channel.SMS, choice.sms),
                    (Channel.PUSH, choice.push),
                )
                if on and c in channels
            }
            if not wanted:
                continue
            subscriptions: list[PushSubscription] = []
            if Channel.PUSH in wanted:
                subscriptions = list(
                    await db.scalars(
                        select(PushSubscription).where(PushSubscription.user_id == user.id)
                    )
                )
            try:
                rendered = render(event.kind, found[1], name=user.name, base_url=base_url)
            except (TemplateError, KeyError, TypeError, ValueError):
                # A bug (a fact the template wants is missing): logged, never retried for
                # ever — the event stays expanded so it cannot block the rest.
                log.exception(
                    "notification event %s (%s) cannot be rendered", event.id, event.kind.value
                )
                continue
            rows = _rows(event, user, rendered, wanted, subscriptions)
            if rows:
                await db.execute(insert(NotificationDelivery).values(rows).on_conflict_do_nothing())
    return len(events)


async def _outgoing(db: AsyncSession, row: NotificationDelivery) -> Outgoing:
    target = None
    if row.channel is Channel.PUSH:
        sub = await db.get(PushSubscription, row.address)
        if sub is None:
            raise DeliveryFailed("push", "the subscription was removed", permanent=True)
        target = PushTarget(endpoint=sub.endpoint, p256dh=sub.p256dh, auth=sub.auth)
    return Outgoing(
        key=str(row.id),
        address=row.address,
        subject=row.subject,
        text=row.body_text,
        html=row.body_html,
        push=target,
    )


async def deliver_next(
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[Channel, Sender],
    settings: NotificationSettings,
    backoff: Backoff,
) -> bool:
    """Send the next due message, if any; False when none is due (or all are taken)."""
    async with sessions() as db, db.begin():
        row = await db.scalar(
            select(NotificationDelivery)
            .where(NotificationDelivery.status == DeliveryStatus.PENDING)
            .where(NotificationDelivery.next_attempt_at <= func.now())
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if row is None:
            return False
        row.attempts += 1
        try:
            sender = channels.get(row.channel)
            if sender is None:
                raise DeliveryFailed(row.channel.value, "channel not configured in this process")
            message = await _outgoing(db, row)
            # Bounded: the row stays locked while it is sent.
            async with asyncio.timeout(settings.send_timeout_s + 5):
                await sender.send(message)
        except Exception as exc:
            if is_database_error(exc):
                # The database's failure, not the message's: the round fails (the job backs
                # off) and the attempt, rolled back, was never made.
                raise
            failure = _failure(row.channel.value, exc)
            row.last_error = str(failure)[:500]
            if failure.gone and row.channel is Channel.PUSH:
                await db.execute(delete(PushSubscription).where(PushSubscription.id == row.address))
            if failure.permanent or row.attempts >= settings.max_attempts:
                row.status = DeliveryStatus.FAILED
                log.warning("notification %s given up: %s", row.id, failure)
            else:
                delay = backoff.delay_s(row.attempts - 1)
                row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
                # ERROR once per message, then quietly until it goes through (no log storms).
                level = logging.ERROR if row.attempts == 1 else logging.DEBUG
                log.log(
                    level,
                    "notification %s not sent (try %s, next in %.0f s): %s",
                    row.id,
                    row.attempts,
                    delay,
                    failure,
                )
        else:
            row.status = DeliveryStatus.SENT
            row.sent_at = datetime.now(UTC)
            row.last_error = None
    return True


def _failure(channel: str, exc: Exception) -> DeliveryFailed:
    """What went wrong sending a message, as a retryable or permanent :class:`DeliveryFailed`.

    A sender that raised something else (a bug, a value a library refused) counts as a failed
    attempt too, committed with the others: rolled back, the message would stay at the head
    of the queue and be tried again at once, for ever, in front of every other (issue 14).
    """
    if isinstance(exc, DeliveryFailed):
        return exc
    if isinstance(exc, TimeoutError):
        return DeliveryFailed(channel, "timed out")
    log.error("sending a %s message raised %r", channel, exc, exc_info=exc)
    return DeliveryFailed(channel, f"unexpected {type(exc).__name__}: {exc}")


class Notifier:
    """The delivery job: every ``deliver_interval_s``, expand due events and send up to
    ``batch`` due messages. It never stops on an error."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[Channel, Sender],
        settings: Settings,
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._settings = settings.notifications
        self._base_url = settings.app.public_base_url
        self._backoff = Backoff(
            initial_s=self._settings.backoff_s, max_s=self._settings.backoff_max_s
        )
        #: Messages sent or failed by this process (for logs and tests).
        self.handled = 0

    async def round(self) -> int:
        """One pass: expand what is due, then send until nothing is due or ``batch`` went."""
        while await expand_due(self._sessions, self._channels, base_url=self._base_url):
            pass
        handled = 0
        while handled < self._settings.batch and await deliver_next(
            self._sessions, self._channels, self._settings, self._backoff
        ):
            handled += 1
        self.handled += handled
        return handled

    async def run(self) -> None:
        """Rounds for ever, under the jobs' supervisor (:func:`cloud.jobs.supervise`): a
        round that fails — the database restarting, or a bug — is logged, counted and backed
        off, and the rounds resume; nothing escapes into the lifespan's task group."""
        await supervise(
            "notify",
            every(self._settings.deliver_interval_s, self.round),
            expected=(CloudError, *DATABASE_ERRORS, OSError),
        )


@asynccontextmanager
async def running_notifier(state: AppState) -> AsyncIterator[Notifier | None]:
    """The delivery job for the API's lifespan (None when ``deliver_interval_s`` is 0)."""
    if state.settings.notifications.deliver_interval_s <= 0:
        yield None
        return
    async with open_channels(state.settings, state.redis) as channels:
        notifier = Notifier(state.sessions, channels, state.settings)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(notifier.run(), name="notify")
            try:
                yield notifier
            finally:
                task.cancel()
