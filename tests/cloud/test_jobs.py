"""The cloud's background jobs under one supervisor (cloud/jobs.py, issue 14), against the
real services:

* the supervisor logs and counts a job's unexpected failure, backs off and reruns it, lets
  cancellation through, and restarts a body that returned;
* a stopped session the settle job cannot handle (no stop time: an assertion fails) holds
  back only itself: the API's own settle job bills the session beside it and keeps running,
  and the API keeps serving;
* a notification whose sender raises something unforeseen (a ValueError from the e-mail
  library) is a failed attempt, committed: it is retried, then given up, and the message
  behind it is delivered;
* the webhook batcher's batches are cancelled and awaited when it closes (the lifespan's
  exit stack), and it refuses deliveries after.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.billing.quote import Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.db import open_engine, session_factory
from cloud.jobs import supervise
from cloud.notifications.channels import open_channels
from cloud.notifications.delivery import Notifier
from cloud.payments import service
from cloud.payments.dummy import CARD_SUCCEEDS, DummyProvider
from cloud.payments.provider import EventKind, WebhookEvent
from cloud.payments.webhooks import WebhookBatcher
from cloud.pg import PgConnection
from cloud.settings import DbSettings
from cloud.state import AppState
from protocols.backoff import Backoff
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_URL, make_settings
from tests.support.flow_rig import wait_for
from tests.support.market import add_user
from tests.support.mosquitto import Broker, free_port
from tests.support.smtp_server import LocalSmtp

pytestmark = pytest.mark.integration

FAST = Backoff(initial_s=0.01, max_s=0.05)


def _failures(job: str) -> float:
    value = REGISTRY.get_sample_value("chargemitra_worker_job_failures_total", {"task": job})
    return value or 0.0


# --- the supervisor ------------------------------------------------------------------------


async def test_a_job_survives_an_unexpected_failure_and_cancellation_still_stops_it() -> None:
    job = f"test-{new_ulid()}"
    runs: list[int] = []
    resumed = asyncio.Event()

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ValueError("a value the job did not foresee")
        if len(runs) == 2:
            return  # a bug too: restarted, not a reason to stop
        resumed.set()
        await asyncio.Event().wait()  # runs until cancelled

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(supervise(job, body, backoff=FAST))
        await asyncio.wait_for(resumed.wait(), timeout=30)
        assert not task.done()  # the failure did not leave the task group
        task.cancel()
    assert task.cancelled()
    assert runs == [0, 1, 2]
    assert _failures(job) == 2


# --- the settle job ------------------------------------------------------------------------


@pytest.fixture
async def api_state(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[tuple[AppState, httpx.AsyncClient]]:
    """The API in this process with its settle job running every 0.1 s."""
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0.1",
        CHARGEMITRA_NOTIFICATIONS_DELIVER_INTERVAL_S="0",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield app.state.cloud, client


async def _paid_booking(pg: PgConnection, state: AppState) -> tuple[str, str, str]:
    """A booking paid through the API's dummy provider: its device, charger and id."""
    provider = state.payments
    assert isinstance(provider, DummyProvider)
    ids = {k: new_ulid() for k in ("host_user", "host", "driver", "charger", "connector")}
    device = f"cm-{new_ulid().lower()}"
    await pg.execute(
        "INSERT INTO users (id, name) VALUES ($1, 'Host'), ($2, 'Driver')",
        ids["host_user"],
        ids["driver"],
    )
    await pg.execute(
        "INSERT INTO hosts (id, user_id, display_name) VALUES ($1, $2, 'Host')",
        ids["host"],
        ids["host_user"],
    )
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device, ids["host"])
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code) VALUES ($1, $2, $3, 'Gate', "
        "'1 Road', 'Pune', 'Maharashtra', '411001', 18.5, 73.8, 1800, $4)",
        ids["charger"],
        ids["host"],
        device,
        ids["charger"][-10:],
    )
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
        "VALUES ($1, $2, 1, 'Type2', 7400)",
        ids["connector"],
        ids["charger"],
    )
    booking = new_ulid()
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status, "
        "amount_paise) VALUES ($1, $2, $3, $4, tstzrange(now() - interval '1 hour', "
        "now() + interval '1 hour'), 'confirmed', 20000)",
        booking,
        ids["driver"],
        ids["charger"],
        ids["connector"],
    )
    payment, order = await service.open_order(
        state.sessions, provider, user_id=ids["driver"], amount_paise=20_000, booking_id=booking
    )
    result = await provider.pay(order.order_ref, CARD_SUCCEEDS)
    await service.confirm_checkout(
        state.sessions, provider, payment_id=payment.id, user_id=ids["driver"], result=result
    )
    return device, ids["charger"], booking


async def test_a_session_the_settle_job_cannot_handle_holds_back_only_itself(
    pg: PgConnection, api_state: tuple[AppState, httpx.AsyncClient]
) -> None:
    """A stopped session without a stop time (a row written by hand, or by a bug) makes the
    pricing assert: an exception no handler foresaw. Before issue 14 it ended the settle
    job, whose task group then cancelled the API's lifespan; now it waits out its own
    backoff while the session beside it is billed, and the API keeps serving."""
    state, client = api_state
    bookings = [await _paid_booking(pg, state) for _ in range(2)]
    # Both at once, so the job meets them in one batch.
    async with pg.transaction():
        sessions = [
            await pg.fetchval(
                "INSERT INTO sessions (device_id, device_session_id, connector_number, "
                "charger_id, booking_id, credential_kind, credential_ref, state, started_at, "
                "stopped_at, meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, "
                "events_received) VALUES ($1, $2, 1, $3, $4, 'Remote', $5, 'stopped', "
                "now() - interval '1 hour', CASE WHEN $6 THEN now() END, 1000, 8400, 7400, "
                "3, 3) RETURNING id",
                device,
                new_ulid(),
                charger,
                booking,
                new_ulid(),
                stopped,
            )
            for (device, charger, booking), stopped in zip(bookings, (False, True), strict=True)
        ]
    broken, good = sessions

    async def settled() -> bool:
        answer: str = await pg.fetchval("SELECT billing_state FROM sessions WHERE id = $1", good)
        return answer == "settled"

    await wait_for(settled, "the good session billed past the broken one")
    bill = price(Tariff(PricingMode.PER_KWH, 1800, 0, 0, 0), Usage(timedelta(hours=1), 7400))
    billed = await pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE session_id = $1 "
        "AND source = 'bill' AND account LIKE 'driver:%'",
        good,
    )
    assert abs(billed) == bill.total_paise
    assert await pg.fetchval("SELECT billing_state FROM sessions WHERE id = $1", broken) == (
        "unbilled"
    )
    (job,) = [t for t in asyncio.all_tasks() if t.get_name() == "settle"]
    assert not job.done()
    assert (await client.get("/healthz")).status_code == 200


# --- the notification delivery job ---------------------------------------------------------


async def test_a_message_whose_sender_raises_is_retried_given_up_and_the_next_delivered(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> None:
    smtp = LocalSmtp(free_port())
    smtp.start()
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_NOTIFICATIONS_SMTP_HOST="127.0.0.1",
        CHARGEMITRA_NOTIFICATIONS_SMTP_PORT=str(smtp.port),
        CHARGEMITRA_NOTIFICATIONS_SMTP_SECURITY="none",
        CHARGEMITRA_NOTIFICATIONS_SMTP_FROM="ChargeMitra <no-reply@chargemitra.test>",
        CHARGEMITRA_NOTIFICATIONS_DELIVER_INTERVAL_S="0.1",
        CHARGEMITRA_NOTIFICATIONS_BACKOFF_S="0.1",
        CHARGEMITRA_NOTIFICATIONS_BACKOFF_MAX_S="0.2",
        CHARGEMITRA_NOTIFICATIONS_MAX_ATTEMPTS="3",
    )
    # An address with a line break (written by hand, or by a bug): the e-mail library
    # refuses the header with a ValueError — not the DeliveryFailed a sender promises.
    poison = await add_user(pg, settings, Role.DRIVER)
    await pg.execute(
        "UPDATE users SET email = $1 WHERE id = $2", "x@example.in\r\nBcc: y@example.in", poison.id
    )
    fine = await add_user(pg, settings, Role.DRIVER)
    facts = {
        "booking_id": "B1",
        "charger_id": "C1",
        "charger_name": "Home charger",
        "address": "MG Road, Pune",
        "start": "2026-12-06T04:30:00+00:00",
        "end": "2026-12-06T05:30:00+00:00",
        "amount_paise": 7080,
        "upper_bound": False,
    }
    for user in (poison, fine):  # the poison first: it heads the queue
        await pg.execute(
            "INSERT INTO notification_events (kind, subject_id, user_id, facts) "
            "VALUES ('booking_confirmed', 'B1', $1, $2::jsonb)",
            user.id,
            json.dumps(facts),
        )
    redis = Redis.from_url(REDIS_URL)
    try:
        async with (
            open_engine(settings.db) as engine,
            open_channels(settings, redis) as channels,
            asyncio.TaskGroup() as tasks,
        ):
            notifier = Notifier(session_factory(engine), channels, settings)
            job = tasks.create_task(notifier.run(), name="notify-under-test")

            async def settled() -> bool:
                pending: int = await pg.fetchval(
                    "SELECT count(*) FROM notification_deliveries WHERE status = 'pending'"
                )
                return notifier.handled >= 2 and pending == 0

            await wait_for(settled, "both messages sent or given up")
            assert not job.done()
            job.cancel()
    finally:
        await redis.aclose()
        smtp.stop()
    rows = {
        r["address"]: (r["status"], r["attempts"], r["last_error"])
        for r in await pg.fetch(
            "SELECT address, status, attempts, last_error FROM notification_deliveries"
        )
    }
    status, attempts, error = rows["x@example.in\r\nBcc: y@example.in"]
    assert (status, attempts) == ("failed", 3)
    assert error.startswith("email: unexpected ValueError")
    assert rows[fine.email][:2] == ("sent", 1)
    (mail,) = smtp.messages()
    assert mail.rcpt_tos == (fine.email,)


# --- the webhook batcher -------------------------------------------------------------------


async def test_the_webhook_batcher_cancels_and_awaits_its_batches_when_it_closes(
    db_url: str, pg: PgConnection
) -> None:
    """A batch waits on a lock the test holds; closing the batcher cancels it, waits for it,
    and answers its delivery (no task outlives it), before the engine is disposed."""
    event = WebhookEvent(
        provider="razorpay",
        event_id=f"evt_{new_ulid()}",
        event_type="payment.captured",
        kind=EventKind.PAYMENT_CAPTURED,
        payload={},
        payment_ref="pay_nobody",
    )
    async with open_engine(DbSettings(url=db_url)) as engine:
        batcher = WebhookBatcher(session_factory(engine))
        async with pg.transaction():
            await pg.execute("LOCK TABLE provider_events IN ACCESS EXCLUSIVE MODE")
            async with batcher:
                delivery = asyncio.create_task(batcher.apply(event))

                async def waiting() -> bool:
                    # pg_locks, not pg_stat_activity: that is one snapshot per transaction.
                    blocked: int = await pg.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    )
                    return blocked > 0

                await wait_for(waiting, "the batch to wait on the lock")
            assert not [t for t in asyncio.all_tasks() if t.get_name() == "webhook-batch"]
            with pytest.raises(RuntimeError, match="webhook batcher stopped"):
                await delivery
        with pytest.raises(RuntimeError, match="webhook batcher stopped"):
            await batcher.apply(event)
    assert await pg.fetchval("SELECT count(*) FROM provider_events") == 0
