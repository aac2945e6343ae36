"""The ledger in PostgreSQL (migration 0009, cloud.ledger.service): history cannot be edited,
an unbalanced transaction cannot commit, balances are sums — and over random histories
posted for real, the ledger sums to zero and each session's money adds up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs or py.typed
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from cloud.billing.quote import Rates, Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.db import session_factory
from cloud.ledger import service
from cloud.ledger.accounts import host_account
from cloud.ledger.entries import (
    bill_txn,
    capture_txn,
    payment_txn,
    payout_txn,
    settle_session,
)
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, sqlalchemy_url
from protocols.ids import new_ulid
from tests.cloud.test_ledger import SessionPlan, session_plans

pytestmark = pytest.mark.integration

QUOTE = price(Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), Usage(timedelta(hours=1), 7400))


async def _world(pg: PgConnection) -> dict[str, str]:
    """A host (user + host row), a driver, a device and charger of the host's."""
    ids = {k: new_ulid() for k in ("host_user", "host", "driver", "charger")}
    ids["device"] = f"cm-{new_ulid().lower()}"
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
    await pg.execute(
        "INSERT INTO devices (id, host_id) VALUES ($1, $2)", ids["device"], ids["host"]
    )
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code) VALUES ($1, $2, $3, 'Gate', "
        "'1 Road', 'Pune', 'MH', '411001', 18.5, 73.8, 1800, $4)",
        ids["charger"],
        ids["host"],
        ids["device"],
        ids["charger"][-10:],
    )
    return ids


async def _session(pg: PgConnection, ids: dict[str, str]) -> int:
    session_id: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES ($1, $2, 1, $3, "
        "$4, 'Remote', 'r', 'stopped', now(), 0, 7400, 7400, 1, 1) RETURNING id",
        ids["device"],
        new_ulid(),
        ids["charger"],
        ids["driver"],
    )
    return session_id


async def _payment(pg: PgConnection, ids: dict[str, str], amount: int, session_id: int) -> str:
    payment_id = new_ulid()
    await pg.execute(
        "INSERT INTO payments (id, user_id, session_id, provider, amount_paise, status) "
        "VALUES ($1, $2, $3, 'dummy', $4, 'captured')",
        payment_id,
        ids["driver"],
        session_id,
        amount,
    )
    return payment_id


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def test_a_posted_transaction_is_stamped_sourced_and_balanced(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = await _world(pg)
    sid = await _session(pg, ids)
    payment = await _payment(pg, ids, 20000, sid)
    _, txns = settle_session(
        session_id=sid,
        payment_id=payment,
        driver_id=ids["driver"],
        host_id=ids["host"],
        authorized_paise=20000,
        quote=QUOTE,
        host_gst_registered=True,
        partial_capture=False,
    )
    async with sessions() as db, db.begin():
        txn_ids = await service.post_all(db, txns)
    assert len(set(txn_ids)) == 3
    rows = await pg.fetch(
        "SELECT txn_id, sum(amount_paise) AS total, count(*) AS n, min(created_at) AS first, "
        "max(created_at) AS last, array_agg(DISTINCT source) AS sources FROM ledger_entries "
        "GROUP BY txn_id ORDER BY min(id)"
    )
    assert [r["txn_id"] for r in rows] == txn_ids
    assert all(r["total"] == 0 and r["first"] == r["last"] for r in rows)
    assert set(rows[0]["sources"]) == {"capture"}
    assert set(rows[2]["sources"]) == {"refund"}
    async with sessions() as db:
        money = await service.session_money(db, sid)
        assert (money.captured_paise, money.refunded_paise, money.billed_paise) == (
            20000,
            20000 - 16308,
            16308,
        )
        assert money.captured_paise - money.refunded_paise == money.billed_paise
        assert await service.ledger_total(db) == 0
        assert await service.driver_balance(db, ids["driver"]) == 0
        assert await service.commission_earned(db) == 1382
        assert await service.gst_collected(db) == 249  # the GST on the commission
        assert await service.tcs_collected(db) == 69


async def test_history_cannot_be_rewritten(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The attack: change or remove an entry after the fact (hide a refund, inflate an
    earning). The database refuses both, whoever asks."""
    ids = await _world(pg)
    sid = await _session(pg, ids)
    payment = await _payment(pg, ids, 5000, sid)
    async with sessions() as db, db.begin():
        await service.post(
            db,
            capture_txn(
                payment_id=payment, driver_id=ids["driver"], amount_paise=5000, session_id=sid
            ),
        )
    with pytest.raises(asyncpg.exceptions.IntegrityConstraintViolationError, match="append-only"):
        await pg.execute("UPDATE ledger_entries SET amount_paise = amount_paise * 2")
    with pytest.raises(asyncpg.exceptions.IntegrityConstraintViolationError, match="append-only"):
        await pg.execute("UPDATE ledger_entries SET memo = 'nothing to see'")
    with pytest.raises(asyncpg.exceptions.IntegrityConstraintViolationError, match="append-only"):
        await pg.execute("DELETE FROM ledger_entries WHERE source = 'capture'")
    assert await pg.fetchval("SELECT count(*) FROM ledger_entries") == 2
    assert await pg.fetchval("SELECT sum(abs(amount_paise)) FROM ledger_entries") == 10000


async def test_an_unbalanced_transaction_cannot_commit(pg: PgConnection) -> None:
    """The attack: money created from nothing (a credit to a host with no debit)."""
    ids = await _world(pg)
    txn = new_ulid()
    insert = (
        "INSERT INTO ledger_entries (txn_id, account, amount_paise, source, memo) "
        "VALUES ($1, $2, $3, $4, 'x')"
    )
    with pytest.raises(asyncpg.exceptions.CheckViolationError, match="does not balance"):
        async with pg.transaction():
            await pg.execute(insert, txn, host_account(ids["host"]), -100_000, "host_earning")
    # Balanced in the end is fine, even if written one entry at a time.
    async with pg.transaction():
        await pg.execute(insert, txn, host_account(ids["host"]), -100, "host_earning")
        await pg.execute(insert, txn, "platform_commission", 100, "commission")
    # A posted transaction cannot be reopened by a later one, even with balanced entries.
    with pytest.raises(asyncpg.exceptions.IntegrityConstraintViolationError, match="already"):
        await pg.execute(insert, txn, host_account(ids["host"]), -50, "host_earning")
    assert await pg.fetchval("SELECT count(*) FROM ledger_entries") == 2


@pytest.mark.parametrize(
    ("account", "source", "amount"),
    [
        ("bank", "capture", 5),  # not an account
        ("host:x y", "capture", 5),
        ("provider_clearing", "gift", 5),  # not a source
        ("provider_clearing", "capture", 0),  # a zero entry
    ],
)
async def test_entries_name_a_known_account_and_source(
    pg: PgConnection, account: str, source: str, amount: int
) -> None:
    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await pg.execute(
            "INSERT INTO ledger_entries (txn_id, account, amount_paise, source, memo) "
            "VALUES ($1, $2, $3, $4, 'x')",
            new_ulid(),
            account,
            amount,
            source,
        )


async def test_a_hosts_balance_is_earned_held_payable_paid(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = await _world(pg)
    sid = await _session(pg, ids)
    host, driver = ids["host"], ids["driver"]
    bill = bill_txn(
        session_id=sid, driver_id=driver, host_id=host, quote=QUOTE, host_gst_registered=False
    )
    async with sessions() as db, db.begin():
        await service.post(db, bill)
    earned = QUOTE.host_share_paise  # 124.38
    now = datetime.now(UTC)
    async with sessions() as db:
        held = await service.host_balance(db, host, now=now, hold=timedelta(days=7))
        assert (held.earned_paise, held.held_paise, held.payable_paise, held.paid_paise) == (
            earned,
            earned,
            0,
            0,
        )
        later = now + timedelta(days=8)
        free = await service.host_balance(db, host, now=later, hold=timedelta(days=7))
        assert (free.held_paise, free.payable_paise) == (0, earned)
    payout_id = new_ulid()
    await pg.execute(
        "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end, status) "
        "VALUES ($1, $2, 10000, now() - interval '7 days', now(), 'paid')",
        payout_id,
        host,
    )
    async with sessions() as db, db.begin():
        await service.post(db, payout_txn(payout_id=payout_id, host_id=host, amount_paise=10000))
    async with sessions() as db:
        paid = await service.host_balance(db, host, now=later, hold=timedelta(days=7))
        assert (paid.earned_paise, paid.held_paise, paid.payable_paise, paid.paid_paise) == (
            earned,
            0,
            earned - 10000,
            10000,
        )
        assert await service.gst_collected(db) == QUOTE.gst_paise
        assert await service.driver_balance(db, driver) == -QUOTE.total_paise  # owed
        assert await service.ledger_total(db) == 0


# --- the property, against the real database ------------------------------------------------


async def _post_history(db_url: str, plans: list[SessionPlan]) -> None:
    pg = await connect(DbSettings(url=db_url))
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        ids = await _world(pg)
        make = session_factory(engine)
        sids = []
        for plan in plans:
            quote = price(plan.tariff, plan.usage, Rates(commission_bp=plan.commission_bp))
            sid = await _session(pg, ids)
            sids.append(sid)
            payment = await _payment(pg, ids, plan.authorized_paise, sid)
            settled, txns = settle_session(
                session_id=sid,
                payment_id=payment,
                driver_id=ids["driver"],
                host_id=ids["host"],
                authorized_paise=plan.authorized_paise,
                quote=quote,
                host_gst_registered=plan.registered,
                partial_capture=plan.partial_capture,
            )
            async with make() as db, db.begin():
                await service.post_all(db, txns)
                if settled.due_paise:
                    due = await _payment(pg, ids, settled.due_paise, sid)
                    await service.post(
                        db,
                        payment_txn(
                            payment_id=due,
                            driver_id=ids["driver"],
                            amount_paise=settled.due_paise,
                            session_id=sid,
                        ),
                    )
        async with make() as db:
            assert await service.ledger_total(db) == 0
            for sid in sids:
                money = await service.session_money(db, sid)
                assert money.captured_paise - money.refunded_paise == money.billed_paise
                for value in (money.captured_paise, money.refunded_paise, money.billed_paise):
                    assert type(value) is int
            assert await service.driver_balance(db, ids["driver"]) == 0
            balance = await service.host_balance(
                db, ids["host"], now=datetime.now(UTC), hold=timedelta(0)
            )
            assert balance.payable_paise == balance.earned_paise >= 0
        # No refund exceeds its payment.
        over = await pg.fetchval(
            "SELECT count(*) FROM (SELECT payment_id FROM ledger_entries WHERE account = "
            "'provider_clearing' AND payment_id IS NOT NULL GROUP BY payment_id "
            "HAVING sum(amount_paise) < 0) o"
        )
        assert over == 0
    finally:
        await engine.dispose()
        await close(pg)


@settings(max_examples=15, deadline=None)
@given(plans=st.lists(session_plans, min_size=1, max_size=6))
def test_histories_posted_to_postgres_keep_the_invariants(
    migrated_db: str, plans: list[SessionPlan]
) -> None:
    # Each example brings its own host, driver and sessions: no cleanup between examples.
    # Its own event loop in its own thread: the main thread's loop belongs to pytest-asyncio.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _post_history(migrated_db, plans)).result()
