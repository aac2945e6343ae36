"""The settle step against PostgreSQL and the dummy provider (cloud/payments/settlement.py):
a provider that fails leaves the session priced and visible, a retry bills it once, settlers
racing for one session bill it once, and a cancelled booking's prepayment comes back less its
cancellation fee, once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from cloud.billing.quote import Rates, Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.db import session_factory
from cloud.errors import PaymentProviderError
from cloud.ledger.service import ledger_total, session_money
from cloud.payments import service
from cloud.payments.dummy import CARD_SUCCEEDS, DummyProvider
from cloud.payments.provider import PaymentState
from cloud.payments.settlement import (
    Settler,
    due_sessions,
    release_cancelled,
    settle_session,
    settle_sessions,
)
from cloud.pg import PgConnection
from cloud.settings import BillingSettings, Environment, sqlalchemy_url
from protocols.ids import new_ulid
from tests.support.flow_rig import wait_for

pytestmark = pytest.mark.integration

#: 7.4 kWh at 18 Rs/kWh, GST 18 % (the charger below: no fee, no minimum).
BILL = price(Tariff(PricingMode.PER_KWH, 1800, 0, 0, 0), Usage(timedelta(hours=1), 7400))
PREPAID = 20_000


class FlakyDummy(DummyProvider):
    """The dummy, with captures that fail (the provider down) while ``failures`` > 0."""

    failures = 0

    async def capture(
        self, payment_ref: str, *, amount_paise: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        if self.failures > 0:
            self.failures -= 1
            raise PaymentProviderError("dummy", "capture", code="unavailable")
        return await super().capture(
            payment_ref,
            amount_paise=amount_paise,
            currency=currency,
            idempotency_key=idempotency_key,
        )


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def provider(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[FlakyDummy]:
    async with FlakyDummy(env=Environment.TEST, webhook_secret="s") as dummy:

        async def apply(body: bytes, headers: Mapping[str, str]) -> None:
            async with sessions() as db, db.begin():
                await service.record_webhook(db, dummy.parse_webhook(body, headers))

        dummy.deliver_to(apply)
        yield dummy


async def _paid_session(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy
) -> tuple[int, str]:
    """A driver's booking paid through the dummy, and its stopped session (7.4 kWh)."""
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
        "now() + interval '1 hour'), 'confirmed', $5)",
        booking,
        ids["driver"],
        ids["charger"],
        ids["connector"],
        PREPAID,
    )
    payment, order = await service.open_order(
        sessions, provider, user_id=ids["driver"], amount_paise=PREPAID, booking_id=booking
    )
    result = await provider.pay(order.order_ref, CARD_SUCCEEDS)
    await service.confirm_checkout(
        sessions, provider, payment_id=payment.id, user_id=ids["driver"], result=result
    )
    session_pk: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "booking_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, $4, 'Remote', $5, 'stopped', now() - interval '1 hour', now(), "
        "1000, 8400, 7400, 3, 3) RETURNING id",
        device,
        new_ulid(),
        ids["charger"],
        booking,
        new_ulid(),
    )
    return session_pk, payment.id


async def _settle(
    sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy, session_pk: int
) -> bool:
    return await settle_session(
        sessions, provider, session_pk, platform=Rates(), tcs_bp=50, billing=BillingSettings()
    )


async def _bill_entries(pg: PgConnection, session_pk: int) -> int:
    count: int = await pg.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE session_id = $1 AND source = 'bill'",
        session_pk,
    )
    return count


async def test_a_failed_capture_leaves_the_session_priced_and_a_retry_bills_it_once(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy
) -> None:
    session_pk, payment_id = await _paid_session(pg, sessions, provider)
    provider.failures = 1
    with pytest.raises(PaymentProviderError):
        await _settle(sessions, provider, session_pk)
    # Billable and visible: the amount is written, the prepayment claimed, nothing charged.
    session_row = (
        await pg.fetch("SELECT billing_state, amount_paise FROM sessions WHERE id = $1", session_pk)
    )[0]
    assert (session_row[0], session_row[1]) == ("priced", BILL.total_paise)
    payment_row = (
        await pg.fetch("SELECT status, session_id FROM payments WHERE id = $1", payment_id)
    )[0]
    assert (payment_row[0], payment_row[1]) == ("authorized", session_pk)
    assert await _bill_entries(pg, session_pk) == 0

    assert await _settle(sessions, provider, session_pk) is True
    bills = await _bill_entries(pg, session_pk)
    assert bills > 0
    # Retried again (a redelivered stop, another API process): nothing moves.
    assert await _settle(sessions, provider, session_pk) is False
    assert await _bill_entries(pg, session_pk) == bills
    assert await pg.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment_id) == 1
    assert await pg.fetchval("SELECT count(*) FROM invoices WHERE session_id = $1", session_pk) == 1

    async def refunded() -> bool:
        status = await pg.fetchval("SELECT status FROM payments WHERE id = $1", payment_id)
        return bool(status == "partially_refunded")

    await wait_for(refunded, "the refund webhook")
    async with sessions() as db:
        money = await session_money(db, session_pk)
        assert await ledger_total(db) == 0
    assert (money.captured_paise, money.billed_paise) == (PREPAID, BILL.total_paise)
    assert money.captured_paise - money.refunded_paise == money.billed_paise


async def test_two_settlers_racing_for_one_session_bill_it_once(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy
) -> None:
    session_pk, payment_id = await _paid_session(pg, sessions, provider)
    results = await asyncio.gather(*(_settle(sessions, provider, session_pk) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert (
        await pg.fetchval(
            "SELECT count(DISTINCT txn_id) FROM ledger_entries WHERE session_id = $1 "
            "AND source = 'bill'",
            session_pk,
        )
        == 1
    )
    assert await pg.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment_id) == 1
    assert await pg.fetchval("SELECT count(*) FROM invoices WHERE session_id = $1", session_pk) == 1


@pytest.mark.parametrize("fee", [0, 5_000])
async def test_a_cancelled_bookings_prepayment_is_returned_less_its_fee(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy, fee: int
) -> None:
    session_pk, payment_id = await _paid_session(pg, sessions, provider)
    booking = await pg.fetchval("SELECT booking_id FROM payments WHERE id = $1", payment_id)
    await pg.execute(
        "UPDATE bookings SET status = 'cancelled', cancelled_at = now(), "
        "cancellation_fee_paise = $2 WHERE id = $1",
        booking,
        fee,
    )
    # Not while a session used the booking: that session's settlement owns the payment.
    assert await release_cancelled(sessions, provider) == 0
    await pg.execute("DELETE FROM sessions WHERE id = $1", session_pk)
    provider.failures = 1  # the provider is down for the first round
    with pytest.raises(PaymentProviderError):
        await release_cancelled(sessions, provider)
    assert await release_cancelled(sessions, provider) == 1
    assert await release_cancelled(sessions, provider) == 0  # done: nothing more moves
    refunds = await pg.fetch("SELECT amount_paise FROM refunds WHERE payment_id = $1", payment_id)
    assert [r[0] for r in refunds] == [PREPAID - fee]

    async def refunded() -> bool:
        status = await pg.fetchval("SELECT status FROM payments WHERE id = $1", payment_id)
        return bool(status == ("refunded" if fee == 0 else "partially_refunded"))

    await wait_for(refunded, "the refund webhook")
    driver = await pg.fetchval("SELECT user_id FROM payments WHERE id = $1", payment_id)
    held = await pg.fetchval(
        "SELECT -coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
        f"driver:{driver}",
    )
    assert held == 0  # the fee is billed (to the host), not left as the driver's credit
    billed = await pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE payment_id = $1 "
        "AND source = 'bill' AND account LIKE 'driver:%'",
        payment_id,
    )
    assert billed == fee
    invoices = await pg.fetchval("SELECT count(*) FROM invoices WHERE booking_id = $1", booking)
    assert invoices == (1 if fee else 0)


async def test_the_job_backs_off_a_failing_session_without_starving_the_others(
    pg: PgConnection,
    sessions: async_sessionmaker[AsyncSession],
    provider: FlakyDummy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    billable, _ = await _paid_session(pg, sessions, provider)
    # Stopped earlier, on a device no listed charger names: it cannot be billed.
    stuck: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, "
        "credential_kind, credential_ref, state, started_at, stopped_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES ('cm-nowhere', $1, "
        "1, 'Remote', 'r', 'stopped', now() - interval '3 hours', now() - interval '2 hours', "
        "0, 10, 10, 2, 2) RETURNING id",
        new_ulid(),
    )
    async with sessions() as db:
        assert await due_sessions(db, limit=1) == [stuck]  # the oldest stop first
        assert await due_sessions(db, limit=1, waiting=[stuck]) == [billable]
    settler = Settler(sessions, provider, BillingSettings(settle_backoff_s=3600))
    with caplog.at_level(logging.ERROR, logger="cloud.payments.settlement"):
        assert await settler.round() == 1  # the billable one, past the stuck one
        assert await settler.round() == 0  # the stuck one waits out its backoff
    errors = [r for r in caplog.records if "not settled" in r.getMessage()]
    assert len(errors) == 1  # logged once, not every round
    states = {r[0]: r[1] for r in await pg.fetch("SELECT id, billing_state FROM sessions")}
    assert states == {billable: "settled", stuck: "unbilled"}


async def test_batches_racing_over_the_same_sessions_bill_each_once(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], provider: FlakyDummy
) -> None:
    """The job's batches (settle_sessions) racing each other, a single-session settler and
    the dummy's webhooks over the same sessions, taken in opposite orders: no deadlock, each
    session billed and invoiced once, its money taken once, the ledger balanced, the
    invoice numbers consecutive."""
    made = [await _paid_session(pg, sessions, provider) for _ in range(6)]
    pks = [pk for pk, _ in made]

    async def batch(chunk: list[int]) -> int:
        return await settle_sessions(
            sessions, provider, chunk, platform=Rates(), tcs_bp=50, billing=BillingSettings()
        )

    results = await asyncio.gather(
        batch(pks), batch(list(reversed(pks))), batch(pks[2:]), _settle(sessions, provider, pks[0])
    )
    assert sum(int(r) for r in results) == 6
    for pk, payment_id in made:
        assert await _bill_entries(pg, pk) > 0
        assert (
            await pg.fetchval(
                "SELECT count(DISTINCT txn_id) FROM ledger_entries WHERE session_id = $1 "
                "AND source = 'bill'",
                pk,
            )
            == 1
        )
        assert (
            await pg.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment_id) == 1
        )

    async def refunds_posted() -> bool:  # each refund's two entries, posted by its webhook
        count = await pg.fetchval("SELECT count(*) FROM ledger_entries WHERE source = 'refund'")
        return bool(count == 12)

    await wait_for(refunds_posted, "the refunds' webhooks")
    for pk, _ in made:
        async with sessions() as db:
            money = await session_money(db, pk)
        assert money.captured_paise - money.refunded_paise == money.billed_paise == BILL.total_paise
    async with sessions() as db:
        assert await ledger_total(db) == 0
    numbers = [r["number"] for r in await pg.fetch("SELECT number FROM invoices ORDER BY number")]
    assert numbers == list(range(1, 7))
