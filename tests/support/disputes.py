"""A session settled through the dummy provider, for the dispute tests
(tests/cloud/test_disputes.py) and the admin console's world (tests/support/console_world.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from cloud.billing.service import rates
from cloud.payments import service as payments
from cloud.payments.dummy import CARD_SUCCEEDS, DummyProvider
from cloud.payments.settlement import settle_session
from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.state import AppState
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import ListedCharger
from tests.support.flow_rig import wait_for
from tests.support.market import ApiUser

#: What each settled session's booking was prepaid (paise).
PREPAID = 20_000


@dataclass(frozen=True, slots=True)
class DisputeApi:
    client: httpx.AsyncClient
    settings: Settings
    state: AppState
    provider: DummyProvider


@dataclass(frozen=True, slots=True)
class Settled:
    public_id: str
    pk: int
    payment_id: str


async def settled_session(
    pg: PgConnection,
    api: DisputeApi,
    charger: ListedCharger,
    driver: ApiUser,
    *,
    stopped_ago: timedelta = timedelta(minutes=5),
) -> Settled:
    """A booking prepaid through the dummy's Checkout, its session (1 h, 7.4 kWh) stopped and
    settled by the billing flow: captured whole, billed, the unused part refunded."""
    booking = new_ulid()
    # Each session of a test an hour and a half before the last: bookings of one connector
    # cannot overlap.
    earlier = await pg.fetchval("SELECT count(*) FROM bookings WHERE charger_id = $1", charger.id)
    stopped = datetime.now(UTC) - stopped_ago - earlier * timedelta(minutes=90)
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status, "
        "amount_paise) VALUES ($1, $2, $3, $4, tstzrange($5, $6), 'confirmed', $7)",
        booking,
        driver.id,
        charger.id,
        charger.connectors[1],
        stopped - timedelta(hours=1),
        stopped,
        PREPAID,
    )
    state, provider = api.state, api.provider
    payment, order = await payments.open_order(
        state.sessions, provider, user_id=driver.id, amount_paise=PREPAID, booking_id=booking
    )
    result = await provider.pay(order.order_ref, CARD_SUCCEEDS)
    await payments.confirm_checkout(
        state.sessions, provider, payment_id=payment.id, user_id=driver.id, result=result
    )
    public_id = new_ulid()
    pk: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "booking_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, $4, 'Remote', $5, 'stopped', $6, $7, 1000, 8400, 7400, 3, 3) "
        "RETURNING id",
        charger.device_id,
        public_id,
        charger.id,
        booking,
        new_ulid(),
        stopped - timedelta(hours=1),
        stopped,
    )
    billing = api.settings.billing
    await settle_session(
        state.sessions,
        provider,
        pk,
        platform=rates(billing),
        tcs_bp=billing.tcs_bp,
        billing=billing,
    )

    async def settled() -> bool:
        unsent = await pg.fetchval(
            "SELECT count(*) FROM refunds WHERE payment_id = $1 AND status <> 'processed'",
            payment.id,
        )
        state_now = await pg.fetchval("SELECT billing_state FROM sessions WHERE id = $1", pk)
        return bool(unsent == 0 and state_now == "settled")

    await wait_for(settled, "the session settled and its unused prepayment refunded")
    return Settled(public_id, pk, payment.id)
