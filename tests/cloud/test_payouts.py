"""Host earnings and payouts against the real PostgreSQL (cloud/payouts/, cloud.ledger.service).

A host sees only their own earnings and payouts; a payout never takes more than is payable,
even with many requests at once; an approved payout is paid and debited to the host once,
however often its execution is retried; the weekly run pays each opted-in host once a week;
and over random sequences of bills, requests, approvals, rejections and provider failures the
payouts stay within the earnings and the ledger sums to zero.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs or py.typed
import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.billing.quote import Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.cli import main as cli
from cloud.db import session_factory
from cloud.errors import Conflict, PaymentProviderError
from cloud.kyc.storage import Sealer
from cloud.ledger import service as ledger
from cloud.ledger.entries import bill_txn, payout_txn
from cloud.payments.dummy import DummyProvider, DummySwitches
from cloud.payments.models import PayoutStatus
from cloud.payments.provider import PayoutRequest
from cloud.payments.razorpay_provider import RazorpayProvider
from cloud.payouts import rules
from cloud.payouts import service as payouts
from cloud.payouts.accounts import seal_number
from cloud.pg import PgConnection, close, connect
from cloud.settings import AppSettings, DbSettings, Environment, Settings, sqlalchemy_url
from protocols.ids import new_ulid
from tests.support import fake_razorpay, fake_stripe
from tests.support.cloud_env import TABLES, make_settings
from tests.support.fake_http import Seen
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.market import add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration

#: One hour at 7.4 kW, ₹18/kWh: the host's share of its bill.
QUOTE = price(Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), Usage(timedelta(hours=1), 7400))
SHARE = QUOTE.host_share_paise
NO_HOLD = timedelta(0)
#: For users made outside an API (their tokens are never presented).
TOKENS_UNUSED = Settings(app=AppSettings(secret_key=SecretStr(secrets.token_urlsafe(32))))


@dataclass(frozen=True, slots=True)
class PayoutApi:
    client: httpx.AsyncClient
    settings: Settings
    provider: DummyProvider


@pytest.fixture
async def payout_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[PayoutApi]:
    """The API with no hold period (earnings are payable as soon as billed: the ledger stamps
    entries with the database's clock, which a test cannot move) and the dummy provider."""
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_BILLING_HOLD_DAYS="0",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        provider = app.state.cloud.payments
        assert isinstance(provider, DummyProvider)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield PayoutApi(client, settings, provider)


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(sqlalchemy_url(db_url), pool_size=20)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def _bill(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], host_id: str, driver_id: str
) -> int:
    """A stopped session on a charger of ``host_id``, billed through the ledger's builder:
    the host earns :data:`SHARE`. Returns the session id."""
    device, charger = f"cm-{new_ulid().lower()}", new_ulid()
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device, host_id)
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code) VALUES ($1, $2, $3, 'Gate', "
        "'1 Road', 'Pune', 'MH', '411001', 18.5, 73.8, 1800, $4)",
        charger,
        host_id,
        device,
        charger[-10:],
    )
    session_id: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES ($1, $2, 1, $3, "
        "$4, 'Remote', 'r', 'stopped', now(), 0, 7400, 7400, 1, 1) RETURNING id",
        device,
        new_ulid(),
        charger,
        driver_id,
    )
    async with sessions() as db, db.begin():
        await ledger.post(
            db,
            bill_txn(
                session_id=session_id,
                driver_id=driver_id,
                host_id=host_id,
                quote=QUOTE,
                host_gst_registered=False,
            ),
        )
    return session_id


async def _payout_debits(pg: PgConnection, payout_id: str) -> int:
    count: int = await pg.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE payout_id = $1 AND account LIKE 'host:%'",
        payout_id,
    )
    return count


# --- the routes ----------------------------------------------------------------------------


async def test_a_host_requests_an_admin_approves_the_ledger_pays_once(
    payout_api: PayoutApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    s = payout_api.settings
    host = await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    admin = await add_user(pg, s, Role.ADMIN)
    assert host.host_id is not None
    await _bill(pg, sessions, host.host_id, driver.id)
    await _bill(pg, sessions, host.host_id, driver.id)
    api = payout_api.client

    earnings = (await api.get("/host/earnings", headers=host.headers)).json()
    assert earnings["host_id"] == host.host_id
    assert (earnings["earned_paise"], earnings["payable_paise"], earnings["paid_paise"]) == (
        2 * SHARE,
        2 * SHARE,
        0,
    )

    too_much = await api.post(
        "/host/payouts", json={"amount_paise": 2 * SHARE + 1}, headers=host.headers
    )
    assert too_much.status_code == 409, too_much.text
    asked = await api.post("/host/payouts", json={"amount_paise": SHARE}, headers=host.headers)
    assert asked.status_code == 201, asked.text
    payout = asked.json()
    assert (payout["status"], payout["amount_paise"]) == ("pending", SHARE)
    earnings = (await api.get("/host/earnings", headers=host.headers)).json()
    assert (earnings["requested_paise"], earnings["payable_paise"]) == (SHARE, SHARE)

    approved = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "paid"
    again = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert again.json()["status"] == "paid"
    assert await _payout_debits(pg, payout["id"]) == 1
    earnings = (await api.get("/host/earnings", headers=host.headers)).json()
    assert (earnings["paid_paise"], earnings["requested_paise"], earnings["payable_paise"]) == (
        SHARE,
        0,
        SHARE,
    )

    # The rest: requested whole (no amount), rejected, payable again.
    rest = (await api.post("/host/payouts", headers=host.headers)).json()
    assert rest["amount_paise"] == SHARE
    nothing = await api.post("/host/payouts", headers=host.headers)
    assert nothing.status_code == 409
    rejected = await api.post(
        f"/admin/payouts/{rest['id']}/reject", json={"reason": "KYC"}, headers=admin.headers
    )
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    late = await api.post(f"/admin/payouts/{rest['id']}/approve", headers=admin.headers)
    assert late.status_code == 409
    assert (await api.get("/host/earnings", headers=host.headers)).json()["payable_paise"] == SHARE

    listed = (await api.get("/host/payouts", headers=host.headers)).json()["items"]
    assert {p["id"] for p in listed} == {payout["id"], rest["id"]}
    paid = (await api.get("/admin/payouts?status=paid", headers=admin.headers)).json()["items"]
    assert [p["id"] for p in paid] == [payout["id"]]
    async with sessions() as db:
        assert await ledger.ledger_total(db) == 0


@dataclass(frozen=True, slots=True)
class RazorpayXApi:
    client: httpx.AsyncClient
    settings: Settings
    fake: FakeRazorpay


@pytest.fixture
async def razorpayx_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[RazorpayXApi]:
    """The API paying out through RazorpayX — the fake one, which checks the contract — with
    a 2 s provider timeout (a slow payout answer is a timeout) and no hold period."""
    with fake_razorpay.fake_razorpay() as fake:
        settings = make_settings(
            db_url,
            broker,
            service_passwords["cloud-api"],
            username="cloud-api",
            CHARGEMITRA_BILLING_HOLD_DAYS="0",
            CHARGEMITRA_PAYMENTS_PROVIDER="razorpay",
            CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID=fake_razorpay.KEY_ID,
            CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET=fake_razorpay.KEY_SECRET,
            CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET=fake_razorpay.WEBHOOK_SECRET,
            CHARGEMITRA_PAYMENTS_RAZORPAY_BASE_URL=fake.url,
            CHARGEMITRA_PAYMENTS_RAZORPAYX_ACCOUNT_NUMBER=fake_razorpay.PLATFORM_ACCOUNT,
            CHARGEMITRA_PAYMENTS_TIMEOUT_S="2",
            # No settle job: the sessions billed here by hand are not its to settle.
            CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield RazorpayXApi(client, settings, fake)


def _payout_calls(fake: FakeRazorpay) -> list[Seen]:
    return [s for s in fake.seen if s.method == "POST" and s.path == "/v1/payouts"]


async def test_razorpayx_pays_once_through_a_timeout_and_its_webhook(
    razorpayx_api: RazorpayXApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A host with a verified KYC sets a bank account and asks; an admin approves; the
    payout's answer is lost to a timeout (the payout stays processing), the admin approves
    again: RazorpayX holds one payout (the same idempotency key, the same body), the
    contact and fund account were made once, ``payout.processed`` pays ours, the ledger
    debits once, and a replayed webhook or another approval changes nothing."""
    s, api, fake = razorpayx_api.settings, razorpayx_api.client, razorpayx_api.fake
    host = await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    admin = await add_user(pg, s, Role.ADMIN)
    assert host.host_id is not None
    await _bill(pg, sessions, host.host_id, driver.id)

    missing = await api.get("/host/payout-account", headers=host.headers)
    assert missing.status_code == 404
    bank = {
        "kind": "bank_account",
        "holder_name": "Asha Rao",
        "ifsc": "HDFC0001234",
        "account_number": "50100012345678",
    }
    for bad in ({"ifsc": "HDFC1001234"}, {"account_number": "12345678"}, {"ifsc": "hdfc0001234"}):
        refused = await api.put("/host/payout-account", json=bank | bad, headers=host.headers)
        assert refused.status_code == 422, refused.text
    stripe_kind = {
        "kind": "stripe_account",
        "holder_name": "Asha Rao",
        "stripe_account_id": "acct_1Abc",
    }
    wrong = await api.put("/host/payout-account", json=stripe_kind, headers=host.headers)
    assert wrong.status_code == 409, wrong.text  # RazorpayX cannot pay a Stripe account
    put = await api.put("/host/payout-account", json=bank, headers=host.headers)
    assert put.status_code == 200, put.text
    got = (await api.get("/host/payout-account", headers=host.headers)).json()
    assert got["account_number_masked"] == "XXXXXXXXXX5678"
    assert "50100012345678" not in put.text + json.dumps(got)
    assert (got["ifsc"], got["registered"]) == ("HDFC0001234", False)
    audited = await pg.fetchval(
        "SELECT after::text FROM audit_log WHERE action = 'payout_account.set' AND entity_id = $1",
        host.host_id,
    )
    assert "XXXXXXXXXX5678" in audited
    assert "50100012345678" not in audited
    # At rest only sealed (AES-256-GCM under the KYC key) and masked: a dump reads neither.
    (stored,) = await pg.fetch("SELECT * FROM payout_accounts WHERE host_id = $1", host.host_id)
    dumped = await pg.fetchval(
        "SELECT row_to_json(a)::text FROM payout_accounts a WHERE host_id = $1", host.host_id
    )
    assert "50100012345678" not in dumped
    assert b"50100012345678" not in stored["account_number_sealed"]
    assert stored["account_number_masked"] == "XXXXXXXXXX5678"
    assert stored["account_number_sealed"].startswith(b"CMK1")

    payout = (await api.post("/host/payouts", headers=host.headers)).json()
    fake.slow_payouts, fake.slow_s = 1, 6.0
    lost = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert lost.status_code == 502, lost.text
    assert len(fake.payouts) == 1  # RazorpayX made it; we do not know yet
    status = await pg.fetchval("SELECT status FROM payouts WHERE id = $1", payout["id"])
    assert status == "processing"

    retried = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "processing"  # RazorpayX is still paying it
    (made,) = fake.payouts.values()
    assert retried.json()["provider_ref"] == made["id"]
    calls = _payout_calls(fake)
    assert len(calls) == 2
    assert {c.headers["x-payout-idempotency"] for c in calls} == {payout["id"]}
    assert calls[0].body == calls[1].body
    sent = json.loads(calls[0].body)
    assert (sent["amount"], sent["currency"], sent["mode"], sent["purpose"]) == (
        payout["amount_paise"],
        "INR",
        "IMPS",
        "payout",
    )
    assert (sent["reference_id"], sent["account_number"]) == (
        payout["id"],
        fake_razorpay.PLATFORM_ACCOUNT,
    )
    assert (len(fake.contacts), len(fake.fund_accounts)) == (1, 1)
    # Opened for the registration only: RazorpayX got the real number.
    (fund,) = fake.fund_accounts.values()
    assert fund["bank_account"]["account_number"] == "50100012345678"
    assert sent["fund_account_id"] == next(iter(fake.fund_accounts))
    assert (await api.get("/host/payout-account", headers=host.headers)).json()["registered"]
    assert await _payout_debits(pg, payout["id"]) == 0

    body, headers = fake.payout_webhook("payout.processed", made["id"])
    for _ in range(2):  # RazorpayX delivers at least once
        hook = await api.post("/webhooks/razorpay", content=body, headers=headers)
        assert hook.status_code == 200, hook.text
    assert hook.json()["outcome"] == "duplicate"
    again = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert again.json()["status"] == "paid"
    assert len(fake.payouts) == 1
    assert await _payout_debits(pg, payout["id"]) == 1
    earnings = (await api.get("/host/earnings", headers=host.headers)).json()
    assert (earnings["paid_paise"], earnings["payable_paise"]) == (SHARE, 0)
    async with sessions() as db:
        assert await ledger.ledger_total(db) == 0


async def test_a_reversed_razorpayx_payout_fails_and_is_payable_again(
    razorpayx_api: RazorpayXApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """To a UPI VPA (mode UPI): RazorpayX reverses it, our payout fails, nothing is booked,
    the amount is payable again; a forged webhook changes nothing. A host with no payout
    account has its approved payout fail (RazorpayX has nowhere to send it)."""
    s, api, fake = razorpayx_api.settings, razorpayx_api.client, razorpayx_api.fake
    host = await add_user(pg, s, Role.HOST)
    other = await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    admin = await add_user(pg, s, Role.ADMIN)
    assert host.host_id is not None
    assert other.host_id is not None
    await _bill(pg, sessions, host.host_id, driver.id)
    await _bill(pg, sessions, other.host_id, driver.id)
    vpa = {"kind": "vpa", "holder_name": "Asha Rao", "vpa": "asha.rao@okhdfc"}
    assert (await api.put("/host/payout-account", json=vpa, headers=host.headers)).is_success
    payout = (await api.post("/host/payouts", headers=host.headers)).json()
    approved = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
    assert approved.json()["status"] == "processing", approved.text
    (made,) = fake.payouts.values()
    assert made["mode"] == "UPI"

    body, headers = fake.payout_webhook("payout.reversed", made["id"])
    forged = await api.post(
        "/webhooks/razorpay", content=body, headers=headers | {"x-razorpay-signature": "0" * 64}
    )
    assert forged.status_code == 400
    hook = await api.post("/webhooks/razorpay", content=body, headers=headers)
    assert hook.json()["outcome"] == "applied", hook.text
    (failed,) = await pg.fetch("SELECT status, note FROM payouts WHERE id = $1", payout["id"])
    assert (failed["status"], failed["note"]) == ("failed", "provider: reversed")
    assert await _payout_debits(pg, payout["id"]) == 0
    earnings = (await api.get("/host/earnings", headers=host.headers)).json()
    assert (earnings["payable_paise"], earnings["paid_paise"]) == (SHARE, 0)
    # The same details keep the fund account; other details are registered afresh.
    same = await api.put("/host/payout-account", json=vpa, headers=host.headers)
    assert same.json()["registered"] is True
    moved = await api.put(
        "/host/payout-account", json=vpa | {"vpa": "asha@okaxis"}, headers=host.headers
    )
    assert moved.json()["registered"] is False

    nowhere = (await api.post("/host/payouts", headers=other.headers)).json()
    done = await api.post(f"/admin/payouts/{nowhere['id']}/approve", headers=admin.headers)
    assert (done.json()["status"], done.json()["note"]) == (
        "failed",
        "razorpay payout: invalid-destination",
    )
    assert len(fake.payouts) == 1


async def test_a_host_sees_only_their_money_and_a_driver_none(
    payout_api: PayoutApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The attack: host A reads or spends host B's earnings, or B's payouts; a driver or a
    technician reads anyone's; a host approves their own payout."""
    s = payout_api.settings
    host_a, host_b = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    technician = await add_user(pg, s, Role.TECHNICIAN)
    assert host_a.host_id is not None
    assert host_b.host_id is not None
    for _ in range(3):
        await _bill(pg, sessions, host_b.host_id, driver.id)
    api = payout_api.client
    b_payout = (await api.post("/host/payouts", headers=host_b.headers)).json()

    mine = (await api.get("/host/earnings", headers=host_a.headers)).json()
    assert mine["host_id"] == host_a.host_id
    assert mine["earned_paise"] == mine["payable_paise"] == mine["requested_paise"] == 0
    assert host_b.host_id not in str(mine)
    listed = await api.get("/host/payouts", headers=host_a.headers)
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    spend = await api.post("/host/payouts", json={"amount_paise": 100}, headers=host_a.headers)
    assert spend.status_code == 409  # A has nothing; B's balance is not A's to take
    for who in (driver, technician):
        for method, path in (
            ("GET", "/host/earnings"),
            ("GET", "/host/payouts"),
            ("POST", "/host/payouts"),
            ("GET", "/admin/payouts"),
            ("GET", "/admin/payments"),
            ("POST", f"/admin/payouts/{b_payout['id']}/approve"),
        ):
            answer = await api.request(method, path, headers=who.headers)
            assert answer.status_code == 403, (method, path, answer.text)
    for who in (host_a, host_b):
        answer = await api.post(f"/admin/payouts/{b_payout['id']}/approve", headers=who.headers)
        assert answer.status_code == 403
    assert await _payout_debits(pg, b_payout["id"]) == 0
    b_view = (await api.get("/host/payouts", headers=host_b.headers)).json()["items"]
    assert [p["id"] for p in b_view] == [b_payout["id"]]


async def test_admins_filter_payments_and_bad_values_are_refused(
    payout_api: PayoutApi, pg: PgConnection
) -> None:
    s = payout_api.settings
    admin, host = await add_user(pg, s, Role.ADMIN), await add_user(pg, s, Role.HOST)
    drivers = [await add_user(pg, s, Role.DRIVER) for _ in range(2)]
    for driver, status in zip(drivers, ("authorized", "failed"), strict=True):
        await pg.execute(
            "INSERT INTO payments (id, user_id, provider, amount_paise, status) "
            "VALUES ($1, $2, 'dummy', 5000, $3)",
            new_ulid(),
            driver.id,
            status,
        )
    api, h = payout_api.client, admin.headers
    failed = (await api.get("/admin/payments?status=failed", headers=h)).json()["items"]
    assert [p["user_id"] for p in failed] == [drivers[1].id]
    mine = (await api.get(f"/admin/payments?user_id={drivers[0].id}", headers=h)).json()
    assert [p["status"] for p in mine["items"]] == ["authorized"]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    window = await api.get("/admin/payments", params={"from": since}, headers=h)
    assert len(window.json()["items"]) == 2
    # Values the schema does not offer: Unix time for an instant, 0/1 for a boolean, 0 paise.
    assert (await api.get("/admin/payments?to=0.5", headers=h)).status_code == 422
    for body in ({"weekly_payouts": 0}, {"weekly_payouts": "true"}):
        answer = await api.put("/host/payout-settings", json=body, headers=host.headers)
        assert answer.status_code == 422
    zero = await api.post("/host/payouts", json={"amount_paise": 0}, headers=host.headers)
    assert zero.status_code == 422


async def test_many_requests_at_once_never_exceed_the_payable_balance(
    payout_api: PayoutApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The attack: 30 payout requests released together (two tabs, a script), each for a
    third of the balance. Without the lock on the host's row each would read the same
    payable balance and all would pass; with it exactly three do."""
    s = payout_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    assert host.host_id is not None
    for _ in range(3):
        await _bill(pg, sessions, host.host_id, driver.id)
    payable = 3 * SHARE
    answers = await asyncio.gather(
        *(
            payout_api.client.post(
                "/host/payouts", json={"amount_paise": SHARE}, headers=host.headers
            )
            for _ in range(30)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [409] * 27, statuses
    requested = await pg.fetchval(
        "SELECT sum(amount_paise) FROM payouts WHERE host_id = $1", host.host_id
    )
    assert requested == payable
    async with sessions() as db:
        balance = await ledger.host_balance(db, host.host_id, now=datetime.now(UTC), hold=NO_HOLD)
    assert (balance.requested_paise, balance.payable_paise) == (payable, 0)


async def test_a_retried_execution_pays_and_books_once(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """A crash after the provider paid but before we recorded it, then a retry; and ten
    approvals of one payout at once: one payout at the provider, one debit in the ledger. The
    database refuses a second debit for the same payout even from code that tries."""
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    assert host.host_id is not None
    await _bill(pg, sessions, host.host_id, driver.id)
    now = datetime.now(UTC)
    async with DummyProvider(env=Environment.TEST, webhook_secret="s") as provider:
        async with sessions() as db, db.begin():
            first = await payouts.request_payout(
                db,
                host_id=host.host_id,
                amount_paise=SHARE // 2,
                now=now,
                hold=NO_HOLD,
                requested_by=host.id,
            )
        # The "crash": approved and sent, the provider paid, nothing recorded.
        await pg.execute("UPDATE payouts SET status = 'processing' WHERE id = $1", first.id)
        sent = await provider.payout(PayoutRequest(first.id, first.amount_paise, ""))
        done = await payouts.approve(
            sessions,
            provider,
            payout_id=first.id,
            admin_id=None,
            now=now,
            hold=NO_HOLD,
            sealer=None,
        )
        # Paid as the provider's first answer says: the retry did not pay again.
        assert (done.status, done.provider_ref) == (PayoutStatus.PAID, sent.payout_ref)

        async with sessions() as db, db.begin():
            second = await payouts.request_payout(
                db,
                host_id=host.host_id,
                amount_paise=None,
                now=now,
                hold=NO_HOLD,
                requested_by=host.id,
            )
        results = await asyncio.gather(
            *(
                payouts.approve(
                    sessions,
                    provider,
                    payout_id=second.id,
                    admin_id=None,
                    now=now,
                    hold=NO_HOLD,
                    sealer=None,
                )
                for _ in range(10)
            )
        )
        assert {r.status for r in results} == {PayoutStatus.PAID}
        assert len({r.provider_ref for r in results}) == 1  # one payout at the provider
    assert await _payout_debits(pg, first.id) == 1
    assert await _payout_debits(pg, second.id) == 1
    with pytest.raises(IntegrityError, match="uq_ledger_entries_payout_once"):
        async with sessions() as db, db.begin():
            await ledger.post(
                db, payout_txn(payout_id=second.id, host_id=host.host_id, amount_paise=1)
            )
    async with sessions() as db:
        balance = await ledger.host_balance(db, host.host_id, now=now, hold=NO_HOLD)
        assert (balance.paid_paise, balance.payable_paise) == (SHARE, 0)
        assert await ledger.ledger_total(db) == 0


async def test_a_provider_that_cannot_pay_out_fails_the_payout_and_releases_it(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Razorpay with no RazorpayX account configured cannot pay out: the approval ends
    ``failed``, nothing is booked, and the amount is payable again. So does a dummy told to
    fail."""
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    assert host.host_id is not None
    await _bill(pg, sessions, host.host_id, driver.id)
    now = datetime.now(UTC)
    razorpay = RazorpayProvider(
        key_id="rzp_test_k",
        key_secret="s",
        webhook_secret="w",
        base_url="http://127.0.0.1:9",
        timeout_s=1,
    )
    failing = DummyProvider(
        env=Environment.TEST, webhook_secret="s", switches=DummySwitches(fail=True)
    )
    try:
        for provider in (razorpay, failing):
            async with sessions() as db, db.begin():
                payout = await payouts.request_payout(
                    db,
                    host_id=host.host_id,
                    amount_paise=None,
                    now=now,
                    hold=NO_HOLD,
                    requested_by=host.id,
                )
            done = await payouts.approve(
                sessions,
                provider,
                payout_id=payout.id,
                admin_id=None,
                now=now,
                hold=NO_HOLD,
                sealer=None,
            )
            assert done.status is PayoutStatus.FAILED
            assert done.note
            assert "not-supported" in done.note or "failed" in done.note
            assert await _payout_debits(pg, payout.id) == 0
            async with sessions() as db:
                balance = await ledger.host_balance(db, host.host_id, now=now, hold=NO_HOLD)
                assert (balance.requested_paise, balance.payable_paise) == (0, SHARE)
    finally:
        await razorpay.aclose()
    with pytest.raises(PaymentProviderError) as refused:
        await razorpay.payout(PayoutRequest("x", 1, "fa_1"))
    assert refused.value.code == "not-supported"


async def test_held_and_disputed_earnings_are_not_payable(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    assert host.host_id is not None
    first = await _bill(pg, sessions, host.host_id, driver.id)
    await _bill(pg, sessions, host.host_id, driver.id)
    now = datetime.now(UTC)
    async with sessions() as db:
        held = await ledger.host_balance(db, host.host_id, now=now, hold=timedelta(days=7))
        assert (held.held_paise, held.payable_paise) == (2 * SHARE, 0)
    with pytest.raises(Conflict):
        async with sessions() as db, db.begin():
            await payouts.request_payout(
                db,
                host_id=host.host_id,
                amount_paise=1,
                now=now,
                hold=timedelta(days=7),
                requested_by=host.id,
            )
    dispute = new_ulid()
    await pg.execute(
        "INSERT INTO disputes (id, session_id, raised_by, reason_code, description) "
        "VALUES ($1, $2, $3, 'other', 'x')",
        dispute,
        first,
        driver.id,
    )
    later = now + timedelta(days=8)
    async with sessions() as db:
        b = await ledger.host_balance(db, host.host_id, now=later, hold=timedelta(days=7))
        assert (b.held_paise, b.disputed_paise, b.payable_paise) == (SHARE, SHARE, SHARE)
    await pg.execute("UPDATE disputes SET status = 'resolved_no_action' WHERE id = $1", dispute)
    async with sessions() as db:
        b = await ledger.host_balance(db, host.host_id, now=later, hold=timedelta(days=7))
        assert (b.held_paise, b.payable_paise) == (0, 2 * SHARE)


# --- the weekly run ------------------------------------------------------------------------


async def test_the_weekly_run_pays_opted_in_hosts_once_a_week(
    payout_api: PayoutApi, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    s = payout_api.settings
    weekly, manual = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    assert weekly.host_id is not None
    assert manual.host_id is not None
    await _bill(pg, sessions, weekly.host_id, driver.id)
    await _bill(pg, sessions, manual.host_id, driver.id)
    on = await payout_api.client.put(
        "/host/payout-settings", json={"weekly_payouts": True}, headers=weekly.headers
    )
    assert on.json() == {"host_id": weekly.host_id, "weekly_payouts": True}
    now = datetime.now(UTC)
    run = await payouts.run_weekly(
        sessions, payout_api.provider, now=now, hold=NO_HOLD, sealer=None
    )
    assert (len(run.paid), run.skipped) == (1, 0)
    await _bill(pg, sessions, weekly.host_id, driver.id)  # more earned later that week
    again = await payouts.run_weekly(
        sessions, payout_api.provider, now=now, hold=NO_HOLD, sealer=None
    )
    assert (again.paid, again.skipped) == ([], 1)
    rows = await pg.fetch("SELECT host_id, amount_paise, automatic, status FROM payouts")
    assert [(r["host_id"], r["amount_paise"], r["automatic"], r["status"]) for r in rows] == [
        (weekly.host_id, SHARE, True, "paid")
    ]
    next_week = await payouts.run_weekly(
        sessions, payout_api.provider, now=now + timedelta(days=7), hold=NO_HOLD, sealer=None
    )
    assert len(next_week.paid) == 1
    earnings = (await payout_api.client.get("/host/earnings", headers=weekly.headers)).json()
    assert (earnings["paid_paise"], earnings["payable_paise"]) == (2 * SHARE, 0)
    assert earnings["weekly_payouts"] is True
    # The database holds one automatic payout per host per week, whoever inserts it.
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await pg.execute(
            "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end, "
            "automatic) VALUES ($1, $2, 1, $3, $3, true)",
            new_ulid(),
            weekly.host_id,
            rules.week_start(now),
        )


async def test_a_payout_account_that_cannot_be_opened_stops_only_its_own_payout(
    pg: PgConnection, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Bank accounts sealed under a key the weekly run does not have: the two already
    registered with the provider are paid by their reference (the number is not opened);
    the one still to register stays ``processing`` without stopping the run, and is paid by
    the next run that has the key."""
    key = Sealer(secrets.token_bytes(32))
    driver = await add_user(pg, settings, Role.DRIVER)
    hosts = [await add_user(pg, settings, Role.HOST) for _ in range(3)]
    for i, host in enumerate(hosts):
        assert host.host_id is not None
        await _bill(pg, sessions, host.host_id, driver.id)
        await pg.execute("UPDATE hosts SET weekly_payouts = true WHERE id = $1", host.host_id)
        await pg.execute(
            "INSERT INTO payout_accounts (host_id, kind, holder_name, ifsc, "
            "account_number_sealed, account_number_masked, destination_ref) "
            "VALUES ($1, 'bank_account', 'Asha Rao', 'HDFC0001234', $2, 'XXXXXXXX5678', $3)",
            host.host_id,
            seal_number(key, host.host_id, "50100012345678"),
            None if i == 1 else f"fa_{i}",
        )
    unregistered = hosts[1].host_id
    now = datetime.now(UTC)
    async with DummyProvider(env=Environment.TEST, webhook_secret="s") as provider:
        run = await payouts.run_weekly(sessions, provider, now=now, hold=NO_HOLD, sealer=None)
        assert (len(run.paid), len(run.processing), run.failed) == (2, 1, [])
        rows = await pg.fetch("SELECT host_id, status FROM payouts")
        assert {r["host_id"]: r["status"] for r in rows} == {
            h.host_id: "processing" if h.host_id == unregistered else "paid" for h in hosts
        }
        later = await payouts.run_weekly(sessions, provider, now=now, hold=NO_HOLD, sealer=key)
        assert (len(later.paid), later.processing) == (1, [])
    assert await pg.fetchval("SELECT count(*) FROM payouts WHERE status = 'paid'") == 3
    assert await pg.fetchval(
        "SELECT destination_ref FROM payout_accounts WHERE host_id = $1", unregistered
    )


def test_week_start_is_the_monday() -> None:
    sunday = datetime(2026, 12, 6, 23, 59, tzinfo=UTC)
    assert rules.week_start(sunday) == datetime(2026, 11, 30, tzinfo=UTC)
    assert rules.week_start(datetime(2026, 11, 30, tzinfo=UTC)) == datetime(
        2026, 11, 30, tzinfo=UTC
    )


def test_the_cli_runs_the_weekly_payouts(migrated_db: str) -> None:
    """``chargemitra-cloud payouts run``, as a weekly timer calls it: pays the opted-in host,
    then (the same week) does nothing. Synchronous: the command runs its own event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _weekly_host(migrated_db)).result()
    env = {
        "CHARGEMITRA_APP_ENV": "test",
        "CHARGEMITRA_APP_SECRET_KEY": secrets.token_urlsafe(32),
        "CHARGEMITRA_DB_URL": migrated_db,
        "CHARGEMITRA_MQTT_PASSWORD": secrets.token_urlsafe(16),
        "CHARGEMITRA_BILLING_HOLD_DAYS": "0",
    }

    def run() -> Result:
        # In a thread: the command's asyncio.run() would reset this thread's event loop,
        # which belongs to pytest-asyncio.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(CliRunner().invoke, cli, ["payouts", "run"], env=env).result()

    result = run()
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)
    assert (len(first["paid"]), first["skipped"]) == (1, 0), first
    second = json.loads(run().output)
    assert second == {"paid": [], "failed": [], "processing": [], "skipped": 1}


async def _weekly_host(db_url: str) -> None:
    """An empty database but for a weekly-payout host with one billed session."""
    pg = await connect(DbSettings(url=db_url))
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        await pg.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        host = await add_user(pg, TOKENS_UNUSED, Role.HOST)
        driver = await add_user(pg, TOKENS_UNUSED, Role.DRIVER)
        assert host.host_id is not None
        await pg.execute("UPDATE hosts SET weekly_payouts = true WHERE id = $1", host.host_id)
        await _bill(pg, session_factory(engine), host.host_id, driver.id)
    finally:
        await engine.dispose()
        await close(pg)


# --- the property ----------------------------------------------------------------------------

#: One step: bill a session, request (an amount as a fraction of payable, or all), approve or
#: reject the n-th payout, approve with the provider failing.
step = st.one_of(
    st.tuples(st.just("bill"), st.integers(0, 0)),
    st.tuples(st.just("request"), st.integers(0, 100)),
    st.tuples(st.just("approve"), st.integers(0, 20)),
    st.tuples(st.just("reject"), st.integers(0, 20)),
    st.tuples(st.just("approve_failing"), st.integers(0, 20)),
)


async def _run_history(db_url: str, steps: list[tuple[str, int]]) -> None:
    pg = await connect(DbSettings(url=db_url))
    engine = create_async_engine(sqlalchemy_url(db_url))
    make = session_factory(engine)
    ok = DummyProvider(env=Environment.TEST, webhook_secret="s")
    failing = DummyProvider(
        env=Environment.TEST, webhook_secret="s", switches=DummySwitches(fail=True)
    )
    try:
        host = await add_user(pg, TOKENS_UNUSED, Role.HOST)
        driver = await add_user(pg, TOKENS_UNUSED, Role.DRIVER)
        assert host.host_id is not None
        made: list[str] = []
        now = datetime.now(UTC)
        for kind, n in steps:
            if kind == "bill":
                await _bill(pg, make, host.host_id, driver.id)
            elif kind == "request":
                async with make() as db:
                    payable = (
                        await ledger.host_balance(db, host.host_id, now=now, hold=NO_HOLD)
                    ).payable_paise
                amount = None if n == 100 else max(1, payable * n // 50)  # up to 2x payable
                try:
                    async with make() as db, db.begin():
                        p = await payouts.request_payout(
                            db,
                            host_id=host.host_id,
                            amount_paise=amount,
                            now=now,
                            hold=NO_HOLD,
                            requested_by=host.id,
                        )
                    made.append(p.id)
                except Conflict:
                    assert amount is None or amount > payable
            elif made:
                target = made[n % len(made)]
                try:
                    if kind == "reject":
                        async with make() as db, db.begin():
                            await payouts.reject(
                                db, payout_id=target, admin_id=host.id, reason="x", now=now
                            )
                    else:
                        provider = failing if kind == "approve_failing" else ok
                        await payouts.approve(
                            make,
                            provider,
                            payout_id=target,
                            admin_id=None,
                            now=now,
                            hold=NO_HOLD,
                            sealer=None,
                        )
                except Conflict:
                    pass  # rejected, failed, or past pending: refused, nothing moved
            async with make() as db:
                b = await ledger.host_balance(db, host.host_id, now=now, hold=NO_HOLD)
                for value in (b.earned_paise, b.paid_paise, b.requested_paise, b.payable_paise):
                    assert type(value) is int
                assert 0 <= b.paid_paise <= b.paid_paise + b.requested_paise <= b.earned_paise
                assert b.payable_paise >= 0
                assert await ledger.ledger_total(db) == 0
        paid_rows = await pg.fetchval(
            "SELECT coalesce(sum(amount_paise), 0) FROM payouts WHERE host_id = $1 "
            "AND status = 'paid'",
            host.host_id,
        )
        debits = await pg.fetchval(
            "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1 "
            "AND source = 'payout'",
            f"host:{host.host_id}",
        )
        assert paid_rows == debits
    finally:
        await engine.dispose()
        await close(pg)


@hypothesis_settings(max_examples=20, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=15))
def test_random_histories_keep_payouts_within_earnings(
    migrated_db: str, steps: list[tuple[str, int]]
) -> None:
    # Each example has its own host and driver: no cleanup between examples. Its own loop
    # in its own thread: the main thread's loop belongs to pytest-asyncio.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _run_history(migrated_db, steps)).result()


# --- Stripe transfer reversals ------------------------------------------------------------------


async def test_a_stripe_transfer_reversed_after_payment_makes_the_host_payable_again(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A payout paid as a Connect transfer, then pulled back in two parts: each
    ``transfer.reversed`` (signed by the fake Stripe, through ``POST /webhooks/stripe``) undoes
    that much of the payout's debit once — the host's payable grows back, audited — and a
    repeated or late event (a smaller reversed total) moves nothing."""
    with fake_stripe.fake_stripe() as stp:
        stp.accounts.add("acct_1HostA")
        settings = make_settings(
            db_url,
            broker,
            service_passwords["cloud-api"],
            username="cloud-api",
            CHARGEMITRA_BILLING_HOLD_DAYS="0",
            CHARGEMITRA_PAYMENTS_PROVIDER="stripe",
            CHARGEMITRA_PAYMENTS_STRIPE_SECRET_KEY=fake_stripe.SECRET_KEY,
            CHARGEMITRA_PAYMENTS_STRIPE_WEBHOOK_SECRET=fake_stripe.WEBHOOK_SECRET,
            CHARGEMITRA_PAYMENTS_STRIPE_BASE_URL=stp.url,
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        ):
            host = await add_user(pg, settings, Role.HOST)
            driver = await add_user(pg, settings, Role.DRIVER)
            admin = await add_user(pg, settings, Role.ADMIN)
            assert host.host_id is not None
            await _bill(pg, sessions, host.host_id, driver.id)
            account = {
                "kind": "stripe_account",
                "holder_name": "Asha Rao",
                "stripe_account_id": "acct_1HostA",
            }
            put = await api.put("/host/payout-account", json=account, headers=host.headers)
            assert put.status_code == 200, put.text
            payout = (await api.post("/host/payouts", headers=host.headers)).json()
            paid = await api.post(f"/admin/payouts/{payout['id']}/approve", headers=admin.headers)
            assert paid.json()["status"] == "paid", paid.text
            (transfer,) = stp.transfers.values()

            async def earnings() -> tuple[int, int]:
                got = (await api.get("/host/earnings", headers=host.headers)).json()
                return got["paid_paise"], got["payable_paise"]

            assert await earnings() == (SHARE, 0)
            part = SHARE // 3
            first = stp.webhook("transfer.reversed", stp.reverse(transfer["id"], part))
            # Delivered while our payout is still processing (the transfer's answer not yet
            # recorded): refused, not stored, so Stripe delivers it again once it is paid.
            await pg.execute("UPDATE payouts SET status = 'processing' WHERE id = $1", payout["id"])
            early = await api.post("/webhooks/stripe", content=first[0], headers=first[1])
            assert early.status_code == 409, early.text
            await pg.execute("UPDATE payouts SET status = 'paid' WHERE id = $1", payout["id"])
            for expected in ("applied", "duplicate"):
                hook = await api.post("/webhooks/stripe", content=first[0], headers=first[1])
                assert (hook.status_code, hook.json()["outcome"]) == (200, expected), hook.text
            assert await earnings() == (SHARE - part, part)
            rest = stp.webhook("transfer.reversed", stp.reverse(transfer["id"], SHARE - part))
            hook = await api.post("/webhooks/stripe", content=rest[0], headers=rest[1])
            assert hook.json()["outcome"] == "applied"
            assert await earnings() == (0, SHARE)
            # The first reversal's news again under a new event id (a smaller total): stale.
            late_transfer = json.loads(first[0])["data"]["object"]
            late = stp.webhook("transfer.reversed", late_transfer)
            hook = await api.post("/webhooks/stripe", content=late[0], headers=late[1])
            assert hook.json()["outcome"] == "stale"
            assert await earnings() == (0, SHARE)

            audited = await pg.fetch(
                "SELECT data FROM audit_log WHERE action = 'payout.reversed' AND entity_id = $1 "
                "ORDER BY id",
                payout["id"],
            )
            assert [json.loads(r["data"])["undone_paise"] for r in audited] == [part, SHARE - part]
            status = await pg.fetchval("SELECT status FROM payouts WHERE id = $1", payout["id"])
            assert status == "paid"
            assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
