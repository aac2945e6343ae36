"""What the admin console's and the host's page tests decide on: a host with a pending
listing and a KYC submission (sent through ``POST /host/kyc``, documents encrypted), a
driver's session on the host's approved charger paid through the dummy provider and settled
by the billing flow, its dispute (through ``POST /sessions/{id}/disputes``) and its review
(``POST /sessions/{id}/review``), and a payout the host asked for."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cloud.accounts.models import Role
from cloud.payments.dummy import DummyProvider
from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.state import AppState
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import add_charger
from tests.support.disputes import DisputeApi, settled_session
from tests.support.market import ApiUser, add_user

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
PAN = "ABCPE1234F"
AADHAAR = "2345 6789 0124"


@dataclass(frozen=True, slots=True)
class ConsoleWorld:
    host: ApiUser
    driver: ApiUser
    admin: ApiUser
    approved_charger: str
    pending_charger: str
    submission_id: str
    session_id: str
    dispute_id: str
    review_id: str


async def unverified(pg: PgConnection, host: ApiUser) -> None:
    """A host who has not been through KYC yet (test users are made verified)."""
    await pg.execute(
        "UPDATE hosts SET kyc_status = 'not_started', kyc_verified_at = NULL WHERE id = $1",
        host.host_id,
    )


def kyc_files() -> dict[str, tuple[str, bytes, str]]:
    return {
        "pan_card": ("pan.png", PNG, "image/png"),
        "address_proof": ("bill.png", PNG, "image/png"),
    }


async def console_world(
    pg: PgConnection, client: httpx.AsyncClient, settings: Settings, state: AppState
) -> ConsoleWorld:
    host, driver = await add_user(pg, settings, Role.HOST), await add_user(pg, settings)
    admin = await add_user(pg, settings, Role.ADMIN)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    pending = await add_charger(
        pg, host, moderation_status="pending", is_listed=False, with_device=False
    )
    await unverified(pg, host)
    sent = await client.post(
        "/host/kyc", data={"pan": PAN, "aadhaar": AADHAAR}, files=kyc_files(), headers=host.headers
    )
    assert sent.status_code == 201, sent.text
    assert isinstance(state.payments, DummyProvider)
    settled = await settled_session(
        pg, DisputeApi(client, settings, state, state.payments), charger, driver
    )
    opened = await client.post(
        f"/sessions/{settled.public_id}/disputes",
        headers=driver.headers,
        json={"reason_code": "billed_wrong", "description": "Charged for 7 kWh, got 5."},
    )
    assert opened.status_code == 201, opened.text
    photo = await client.post(
        f"/disputes/{opened.json()['id']}/photos",
        headers=driver.headers,
        files={"photo": ("cable.png", PNG, "image/png")},
    )
    assert photo.status_code == 201, photo.text
    review = {"rating": 2, "text": "Slow, and the host was rude."}
    reviewed = await client.post(
        f"/sessions/{settled.public_id}/review", headers=driver.headers, json=review
    )
    assert reviewed.status_code == 201, reviewed.text
    await pg.execute(  # a payout the host asked for, awaiting an admin
        "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end) "
        "VALUES ($1, $2, 100, now() - interval '7 days', now())",
        new_ulid(),
        host.host_id,
    )
    return ConsoleWorld(
        host=host,
        driver=driver,
        admin=admin,
        approved_charger=charger.id,
        pending_charger=pending.id,
        submission_id=sent.json()["submission"]["id"],
        session_id=settled.public_id,
        dispute_id=opened.json()["id"],
        review_id=reviewed.json()["id"],
    )
