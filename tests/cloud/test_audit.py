"""The audit log: admin and money actions write who, what, when, before/after, request id
and client address in their own transaction; admins query it; the table refuses UPDATE and
DELETE, from the application's own connection too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cloud.accounts.models import Role
from cloud.audit.service import Actor, record
from cloud.pg import PgConnection
from cloud.state import AppState
from protocols.ids import new_ulid
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration


async def _pending_charger(pg: PgConnection, host: ApiUser) -> str:
    charger_id = new_ulid()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, qr_code) VALUES ($1, $2, 'Gate', '1 Road', 'Pune', "
        "'MH', '411001', 18.5, 73.8, 1800, $3)",
        charger_id,
        host.host_id,
        charger_id[-10:],
    )
    return charger_id


def _state(api: Api) -> AppState:
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    return state


async def test_the_application_role_cannot_update_or_delete_audit_rows(market_api: Api) -> None:
    sessions = _state(market_api).sessions
    async with sessions() as db, db.begin():
        await record(db, Actor(None, "system"), action="test.write", entity="thing", entity_id="T1")
    for statement in (
        "UPDATE audit_log SET action = 'test.rewritten'",
        "DELETE FROM audit_log",
    ):
        with pytest.raises(DBAPIError, match="audit_log is append-only"):
            async with sessions() as db, db.begin():
                await db.execute(text(statement))
    async with sessions() as db:
        rows = (await db.execute(text("SELECT action FROM audit_log"))).scalars().all()
    assert rows == ["test.write"]


async def test_moderation_is_audited_with_request_id_and_client(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    admin = await add_user(pg, s, Role.ADMIN)
    host = await add_user(pg, s, Role.HOST)
    charger_id = await _pending_charger(pg, host)
    api = market_api.client

    answer = await api.post(
        f"/admin/chargers/{charger_id}/approve",
        json={"note": "looks right"},
        headers=admin.headers | {"X-Request-ID": "req-42.abc"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "req-42.abc"
    suspended = await api.post(
        f"/admin/chargers/{charger_id}/suspend", json={"note": "spam"}, headers=admin.headers
    )
    assert suspended.status_code == 200
    # A request id the API will not take is replaced by its own (a ULID).
    assert len(suspended.headers["X-Request-ID"]) == 26

    page = (
        await api.get(
            "/admin/audit",
            params={"entity": "charger", "entity_id": charger_id},
            headers=admin.headers,
        )
    ).json()
    newest, oldest = page["items"]
    assert oldest["action"] == "charger.approved"
    assert oldest["actor_user_id"] == admin.id
    assert oldest["actor_kind"] == "admin"
    assert oldest["request_id"] == "req-42.abc"
    assert oldest["client_ip"] == "127.0.0.1"
    assert oldest["before"] == {"moderation_status": "pending", "note": None}
    assert oldest["after"] == {"moderation_status": "approved", "note": "looks right"}
    assert newest["action"] == "charger.suspended"
    assert newest["request_id"] == suspended.headers["X-Request-ID"]
    assert newest["before"]["moderation_status"] == "approved"

    # A refused move writes nothing: the audit row is in the refused transaction.
    refused = await api.post(
        f"/admin/chargers/{charger_id}/reject", json={"note": "x"}, headers=admin.headers
    )
    assert refused.status_code == 409
    assert await pg.fetchval("SELECT count(*) FROM audit_log") == 2


async def test_payout_decisions_are_audited(market_api: Api, pg: PgConnection) -> None:
    s = market_api.settings
    admin = await add_user(pg, s, Role.ADMIN)
    host = await add_user(pg, s, Role.HOST)
    payout_id = new_ulid()
    await pg.execute(
        "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end) "
        "VALUES ($1, $2, 500, now() - interval '7 days', now())",
        payout_id,
        host.host_id,
    )
    answer = await market_api.client.post(
        f"/admin/payouts/{payout_id}/reject", json={"reason": "bank details"}, headers=admin.headers
    )
    assert answer.status_code == 200, answer.text
    (row,) = await pg.fetch("SELECT * FROM audit_log WHERE entity = 'payout'")
    assert (row["action"], row["entity_id"], row["actor_user_id"]) == (
        "payout.reject",
        payout_id,
        admin.id,
    )
    assert json.loads(row["data"]) == {"reason": "bank details"}
    assert json.loads(row["before"]) == {"status": "pending"}
    assert json.loads(row["after"]) == {"status": "rejected"}


async def test_admins_filter_and_page_the_log(market_api: Api, pg: PgConnection) -> None:
    s = market_api.settings
    admin = await add_user(pg, s, Role.ADMIN)
    other = await add_user(pg, s, Role.ADMIN)
    sessions = _state(market_api).sessions
    async with sessions() as db, db.begin():
        for n in range(7):
            who = admin if n % 2 == 0 else other
            await record(
                db,
                Actor(who.id, "admin"),
                action="user.disable" if n < 5 else "user.enable",
                entity="user",
                entity_id=f"U{n}",
            )
    api = market_api.client

    async def get(**params: str) -> dict[str, object]:
        answer = await api.get("/admin/audit", params=params, headers=admin.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body

    def ids(page: dict[str, object]) -> list[str]:
        items = page["items"]
        assert isinstance(items, list)
        return [item["entity_id"] for item in items]

    assert ids(await get(actor=admin.id)) == ["U6", "U4", "U2", "U0"]
    assert ids(await get(action="user.enable")) == ["U6", "U5"]
    assert ids(await get(entity="user", entity_id="U3")) == ["U3"]
    first = await get(limit="3")
    assert ids(first) == ["U6", "U5", "U4"]
    second = await get(limit="3", cursor=str(first["next_cursor"]))
    third = await get(limit="3", cursor=str(second["next_cursor"]))
    assert ids(second) + ids(third) == ["U3", "U2", "U1", "U0"]
    assert third["next_cursor"] is None
    now = datetime.now(UTC)
    later = (now + timedelta(hours=1)).isoformat()
    assert ids(await get(**{"from": later})) == []
    assert len(ids(await get(**{"from": (now - timedelta(hours=1)).isoformat(), "to": later}))) == 7
    backwards = await api.get(
        "/admin/audit", params={"from": later, "to": now.isoformat()}, headers=admin.headers
    )
    assert backwards.json()["items"] == []
    for role in (Role.HOST, Role.DRIVER):
        caller = await add_user(pg, s, role)
        assert (await api.get("/admin/audit", headers=caller.headers)).status_code == 403
