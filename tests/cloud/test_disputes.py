"""Disputes over HTTP against the real PostgreSQL, Redis and the dummy provider
(cloud/disputes/).

The acceptance (issue 18): a session paid through the provider fake and settled by the
billing flow is disputed; the host responds; a payout requested while the dispute is open
leaves that session out; an admin resolves it with a partial refund — the ledger balances,
the driver's refund reaches the provider fake (and comes back by its webhook), the host's
payable shrinks by the refund. Also: who may open, see, answer and resolve one; a full
refund charged to the host only as far as the session earned them; a rejection moves no
money and ends the hold.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.errors import PaymentProviderError
from cloud.payments.dummy import DummyProvider
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import add_charger
from tests.support.cloud_env import make_settings
from tests.support.disputes import PREPAID, DisputeApi, settled_session
from tests.support.flow_rig import wait_for
from tests.support.market import ApiUser, add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


async def _one(pg: PgConnection, query: str, *args: object) -> Any:
    """The first row of ``query`` (None without one)."""
    rows = await pg.fetch(query, *args)
    return rows[0] if rows else None


_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
async def dispute_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[DisputeApi]:
    """The API with the dummy provider (its webhooks go through the real route) and no hold
    period: earnings are payable once billed, so only a dispute holds them."""
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_BILLING_HOLD_DAYS="0",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.cloud
        assert isinstance(state.payments, DummyProvider)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield DisputeApi(client, settings, state, state.payments)


async def _host_net(pg: PgConnection, host: ApiUser, session_pk: int) -> int:
    total: int = await pg.fetchval(
        "SELECT -sum(amount_paise) FROM ledger_entries WHERE account = $1 AND session_id = $2",
        f"host:{host.host_id}",
        session_pk,
    )
    return total


async def _earnings(api: DisputeApi, host: ApiUser) -> dict[str, Any]:
    answer = await api.client.get("/host/earnings", headers=host.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _refund_events(api: DisputeApi, receipt: str) -> list[dict[str, Any]]:
    """The dummy's refund webhooks for our refund row ``receipt``."""
    events = [json.loads(body) for body in api.provider.sent]
    return [e for e in events if e.get("refund_receipt") == receipt]


async def test_a_partial_refund_balances_reaches_the_driver_and_shrinks_the_payable(
    dispute_api: DisputeApi, pg: PgConnection
) -> None:
    api, s = dispute_api, dispute_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s)
    admin = await add_user(pg, s, Role.ADMIN)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    disputed = await settled_session(pg, api, charger, driver)
    clean = await settled_session(pg, api, charger, driver)
    net_disputed = await _host_net(pg, host, disputed.pk)
    net_clean = await _host_net(pg, host, clean.pk)
    before = await _earnings(api, host)
    assert before["payable_paise"] == net_disputed + net_clean

    opened = await api.client.post(
        f"/sessions/{disputed.public_id}/disputes",
        json={"reason_code": "billed_wrong", "description": "Charged for 7 kWh, got 5."},
        headers=driver.headers,
    )
    assert opened.status_code == 201, opened.text
    dispute = opened.json()
    assert (dispute["status"], dispute["session_id"]) == ("open", disputed.public_id)
    photo = await api.client.post(
        f"/disputes/{dispute['id']}/photos",
        files={"photo": ("m.png", _PNG, "image/png")},
        headers=driver.headers,
    )
    assert photo.status_code == 201, photo.text
    seen = await api.client.get(photo.json()["url"], headers=host.headers)
    assert (seen.status_code, seen.content) == (200, _PNG)
    responded = await api.client.post(
        f"/disputes/{dispute['id']}/response",
        json={"text": "The meter says 7.4 kWh."},
        headers=host.headers,
    )
    assert responded.status_code == 200, responded.text
    assert responded.json()["status"] == "under_review"

    # Open: the disputed session's earning is held; a payout takes only the other one.
    held = await _earnings(api, host)
    assert (held["disputed_paise"], held["payable_paise"]) == (net_disputed, net_clean)
    payout = await api.client.post("/host/payouts", headers=host.headers)
    assert payout.status_code == 201, payout.text
    assert payout.json()["amount_paise"] == net_clean

    too_much = await api.client.post(
        f"/admin/disputes/{dispute['id']}/resolve",
        json={"outcome": "partial_refund", "refund_paise": PREPAID, "note": "too much"},
        headers=admin.headers,
    )
    assert too_much.status_code == 409, too_much.text
    refund_paise = 1_000
    resolved = await api.client.post(
        f"/admin/disputes/{dispute['id']}/resolve",
        json={
            "outcome": "partial_refund",
            "refund_paise": refund_paise,
            "note": "Meter drift: 1 kWh back.",
        },
        headers=admin.headers,
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["refund_paise"], body["charged_to"]) == (
        "resolved_refund",
        refund_paise,
        "host",
    )

    audited = await pg.fetch(
        "SELECT actor_user_id, after, data FROM audit_log WHERE action = 'dispute.resolve' "
        "AND entity_id = $1",
        dispute["id"],
    )
    assert [(a["actor_user_id"], json.loads(a["after"])["refund_paise"]) for a in audited] == [
        (admin.id, refund_paise)
    ]
    # Each step queued the other side's notification (cloud.notifications: sent later).
    told = await pg.fetch(
        "SELECT user_id, facts->>'status_label' AS label FROM notification_events "
        "WHERE kind = 'dispute_updated' AND subject_id = $1 ORDER BY id",
        dispute["id"],
    )
    assert [(t["user_id"], t["label"]) for t in told] == [
        (host.id, "opened"),
        (driver.id, "under review"),
        (driver.id, "resolved with a refund"),
        (host.id, "resolved with a refund"),
    ]
    # The refund went through the provider fake and came back by its webhook.
    refund = await _one(
        pg,
        "SELECT id, amount_paise, provider_refund_id FROM refunds WHERE reason = $1",
        f"dispute {dispute['id']}",
    )
    assert refund is not None
    assert refund["amount_paise"] == refund_paise
    assert refund["provider_refund_id"] is not None
    # A GST credit note for the refund, in its own series, against the session's invoice:
    # the refunded taxable value and its GST reversed in the invoice's proportion.
    [original] = await pg.fetch(
        "SELECT id, serial, taxable_paise, total_paise FROM invoices "
        "WHERE session_id = $1 AND kind = 'invoice'",
        disputed.pk,
    )
    [note_row] = await pg.fetch(
        "SELECT serial, original_id, refund_id, reason, taxable_paise, cgst_paise, sgst_paise, "
        "igst_paise, total_paise FROM invoices WHERE session_id = $1 AND kind = 'credit_note'",
        disputed.pk,
    )
    assert (note_row["original_id"], note_row["refund_id"]) == (original["id"], refund["id"])
    assert note_row["reason"] == f"dispute {dispute['id']}"
    assert note_row["serial"] != original["serial"]
    assert note_row["total_paise"] == refund_paise
    taxable = (refund_paise * original["taxable_paise"] * 2 + original["total_paise"]) // (
        2 * original["total_paise"]
    )  # half up
    assert note_row["taxable_paise"] == taxable
    tax = note_row["cgst_paise"] + note_row["sgst_paise"] + note_row["igst_paise"]
    assert tax == refund_paise - taxable > 0
    listed = (await api.client.get("/invoices", headers=driver.headers)).json()
    assert note_row["serial"] in json.dumps(listed)

    async def processed() -> bool:
        status = await pg.fetchval("SELECT status FROM refunds WHERE id = $1", refund["id"])
        return bool(status == "processed")

    await wait_for(processed, "the dispute refund's webhook")
    events = await _refund_events(api, refund["id"])
    assert [(e["type"], e["amount_paise"]) for e in events] == [("refund_processed", refund_paise)]

    # The ledger balances; the session's money: captured - refunded = billed - the refund.
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    adjustment = await pg.fetch(
        "SELECT account, amount_paise FROM ledger_entries WHERE session_id = $1 "
        "AND source = 'dispute_adjustment' ORDER BY amount_paise",
        disputed.pk,
    )
    # The credit note's taxable value from the host (unregistered: the platform supplied the
    # GST), its GST back from the platform's gst_payable.
    assert [(r["account"], r["amount_paise"]) for r in adjustment] == [
        (f"driver:{driver.id}", -refund_paise),
        (f"host:{host.host_id}", taxable),
    ]
    reversed_gst = await pg.fetchval(
        "SELECT sum(amount_paise) FROM ledger_entries WHERE session_id = $1 "
        "AND account = 'gst_payable' AND source = 'gst' AND amount_paise > 0",
        disputed.pk,
    )
    assert reversed_gst == tax
    money = await _one(
        pg,
        "SELECT sum(amount_paise) FILTER (WHERE account = 'provider_clearing' "
        "AND source IN ('capture', 'payment')) AS captured, -sum(amount_paise) FILTER "
        "(WHERE account = 'provider_clearing' AND source = 'refund') AS refunded, "
        "sum(amount_paise) FILTER (WHERE account LIKE 'driver:%' AND source = 'bill') AS billed "
        "FROM ledger_entries WHERE session_id = $1",
        disputed.pk,
    )
    assert money is not None
    assert money["captured"] - money["refunded"] == money["billed"] - refund_paise
    assert (
        await pg.fetchval(
            "SELECT -sum(amount_paise) FROM ledger_entries WHERE account = $1",
            f"driver:{driver.id}",
        )
        == 0
    )

    # The host's payable shrank by the refund's taxable value; the hold ended with the dispute.
    after = await _earnings(api, host)
    assert after["disputed_paise"] == 0
    assert after["earned_paise"] == net_disputed + net_clean - taxable
    assert after["requested_paise"] == net_clean
    assert after["payable_paise"] == net_disputed - taxable

    # Resolving again sends nothing twice.
    again = await api.client.post(
        f"/admin/disputes/{dispute['id']}/resolve",
        json={"outcome": "partial_refund", "refund_paise": refund_paise, "note": "again"},
        headers=admin.headers,
    )
    assert again.status_code == 200, again.text
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM refunds WHERE reason = $1", f"dispute {dispute['id']}"
        )
        == 1
    )
    assert len(await _refund_events(api, refund["id"])) == 1


async def test_who_may_open_see_answer_and_resolve_a_dispute(
    dispute_api: DisputeApi, pg: PgConnection
) -> None:
    api, s = dispute_api, dispute_api.settings
    host, other_host = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.HOST)
    driver, other = await add_user(pg, s), await add_user(pg, s)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    session = await settled_session(pg, api, charger, driver)
    old = await settled_session(pg, api, charger, driver, stopped_ago=timedelta(days=15))
    body = {"reason_code": "stopped_early", "description": "Stopped at 40 %."}

    for who, sid in ((other, session.public_id), (driver, old.public_id), (driver, new_ulid())):
        refused = await api.client.post(f"/sessions/{sid}/disputes", json=body, headers=who.headers)
        assert refused.status_code == 403, refused.text
    as_host = await api.client.post(
        f"/sessions/{session.public_id}/disputes", json=body, headers=host.headers
    )
    assert as_host.status_code == 403
    html = await api.client.post(
        f"/sessions/{session.public_id}/disputes",
        json={"reason_code": "other", "description": "<img src=x onerror=alert(1)>"},
        headers=driver.headers,
    )
    assert html.status_code == 422
    opened = await api.client.post(
        f"/sessions/{session.public_id}/disputes", json=body, headers=driver.headers
    )
    assert opened.status_code == 201, opened.text
    dispute_id = opened.json()["id"]
    twice = await api.client.post(
        f"/sessions/{session.public_id}/disputes", json=body, headers=driver.headers
    )
    assert twice.status_code == 409

    for who in (driver, host):
        seen = await api.client.get(f"/disputes/{dispute_id}", headers=who.headers)
        assert seen.status_code == 200, seen.text
        listed = await api.client.get("/disputes", headers=who.headers)
        assert [d["id"] for d in listed.json()["items"]] == [dispute_id]
    for who in (other, other_host):
        assert (
            await api.client.get(f"/disputes/{dispute_id}", headers=who.headers)
        ).status_code == 404
        listed = await api.client.get("/disputes", headers=who.headers)
        assert listed.json()["items"] == []
    stranger = await api.client.post(
        f"/disputes/{dispute_id}/response",
        json={"text": "Not my charger"},
        headers=other_host.headers,
    )
    assert stranger.status_code == 404
    photo = await api.client.post(
        f"/disputes/{dispute_id}/photos",
        files={"photo": ("m.png", _PNG, "image/png")},
        headers=other.headers,
    )
    assert photo.status_code == 404
    by_host = await api.client.post(
        f"/admin/disputes/{dispute_id}/resolve",
        json={"outcome": "rejected", "note": "mine"},
        headers=host.headers,
    )
    assert by_host.status_code == 403


async def test_a_rejection_moves_no_money_and_a_full_refund_charges_the_host_its_share(
    dispute_api: DisputeApi, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, s = dispute_api, dispute_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s)
    admin = await add_user(pg, s, Role.ADMIN)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    rejected_one = await settled_session(pg, api, charger, driver)
    refunded_one = await settled_session(pg, api, charger, driver)
    body = {"reason_code": "charger_did_not_start", "description": "It never started."}
    ids = []
    for session in (rejected_one, refunded_one):
        opened = await api.client.post(
            f"/sessions/{session.public_id}/disputes", json=body, headers=driver.headers
        )
        ids.append(opened.json()["id"])
    queue = await api.client.get("/admin/disputes", headers=admin.headers)
    assert [d["id"] for d in queue.json()["items"]] == ids
    entries_before = await pg.fetchval("SELECT count(*) FROM ledger_entries")

    no = await api.client.post(
        f"/admin/disputes/{ids[0]}/resolve",
        json={"outcome": "rejected", "note": "It charged 7.4 kWh."},
        headers=admin.headers,
    )
    assert (no.status_code, no.json()["status"]) == (200, "resolved_no_action"), no.text
    assert await pg.fetchval("SELECT count(*) FROM ledger_entries") == entries_before
    late = await api.client.post(
        f"/disputes/{ids[0]}/response", json={"text": "late"}, headers=host.headers
    )
    assert late.status_code == 409

    billed: int = await pg.fetchval(
        "SELECT amount_paise FROM ledger_entries WHERE session_id = $1 AND source = 'bill' "
        "AND account LIKE 'driver:%'",
        refunded_one.pk,
    )
    host_net = await _host_net(pg, host, refunded_one.pk)
    commission_before = await ledger_commission(pg)
    # The process environment names another platform GSTIN than the API's settings: the
    # invoice's supplier (the platform: the host has no GSTIN) is read from the settings the
    # API billed with, so the GST is not taken from the host as if it had supplied.
    monkeypatch.setenv("CHARGEMITRA_BILLING_SUPPLIER_GSTIN", "29AABCC1234D1Z7")
    full = await api.client.post(
        f"/admin/disputes/{ids[1]}/resolve",
        json={"outcome": "full_refund", "note": "Refunded in full."},
        headers=admin.headers,
    )
    assert full.status_code == 200, full.text
    assert full.json()["refund_paise"] == billed

    async def processed() -> bool:
        return bool(
            await pg.fetchval(
                "SELECT bool_and(status = 'processed') FROM refunds WHERE reason = $1",
                f"dispute {ids[1]}",
            )
        )

    await wait_for(processed, "the full refund's webhook")
    # The host gives back what the session earned them; the GST comes back from gst_payable
    # (the credit note's tax, the whole invoice's), the platform's commission the rest.
    assert await _host_net(pg, host, refunded_one.pk) == 0
    invoice_gst = await pg.fetchval(
        "SELECT cgst_paise + sgst_paise + igst_paise FROM invoices WHERE session_id = $1 "
        "AND kind = 'invoice'",
        refunded_one.pk,
    )
    assert await ledger_commission(pg) == commission_before - (billed - invoice_gst - host_net)
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    earnings = await _earnings(api, host)
    assert earnings["payable_paise"] == await _host_net(pg, host, rejected_one.pk)


async def ledger_commission(pg: PgConnection) -> int:
    total: int = await pg.fetchval(
        "SELECT coalesce(-sum(amount_paise), 0) FROM ledger_entries "
        "WHERE account = 'platform_commission'"
    )
    return total


async def test_a_refund_the_provider_refused_is_sent_again_by_resolving_again(
    dispute_api: DisputeApi, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision commits before the provider is called: a provider failure leaves the
    dispute resolved, its adjustment posted and its refund row unsent (the API answers 502);
    resolving again sends that row, once."""
    api, s = dispute_api, dispute_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s)
    admin = await add_user(pg, s, Role.ADMIN)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    session = await settled_session(pg, api, charger, driver)
    opened = await api.client.post(
        f"/sessions/{session.public_id}/disputes",
        json={"reason_code": "stopped_early", "description": "Stopped at 20 %."},
        headers=driver.headers,
    )
    dispute_id = opened.json()["id"]
    real_refund = api.provider.refund

    async def provider_down(*args: Any, **kwargs: Any) -> Any:
        raise PaymentProviderError("dummy", "refund", code="unavailable")

    # The provider's outage (the fake's, a third party's stand-in; nothing of ours is faked).
    monkeypatch.setattr(api.provider, "refund", provider_down)
    body = {"outcome": "partial_refund", "refund_paise": 500, "note": "Half a kWh back."}
    failed = await api.client.post(
        f"/admin/disputes/{dispute_id}/resolve", json=body, headers=admin.headers
    )
    assert failed.status_code == 502, failed.text
    row = await _one(pg, "SELECT status, refund_paise FROM disputes WHERE id = $1", dispute_id)
    assert (row["status"], row["refund_paise"]) == ("resolved_refund", 500)
    unsent = await pg.fetch(
        "SELECT id, status, provider_refund_id FROM refunds WHERE reason = $1",
        f"dispute {dispute_id}",
    )
    assert [(r["status"], r["provider_refund_id"]) for r in unsent] == [("pending", None)]
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    # Meanwhile the money is the driver's credit in the ledger, not yet back on their card.
    assert (
        await pg.fetchval(
            "SELECT -sum(amount_paise) FROM ledger_entries WHERE account = $1",
            f"driver:{driver.id}",
        )
        == 500
    )

    monkeypatch.setattr(api.provider, "refund", real_refund)
    again = await api.client.post(
        f"/admin/disputes/{dispute_id}/resolve", json=body, headers=admin.headers
    )
    assert again.status_code == 200, again.text

    async def processed() -> bool:
        status = await pg.fetchval("SELECT status FROM refunds WHERE id = $1", unsent[0]["id"])
        return bool(status == "processed")

    await wait_for(processed, "the re-sent refund's webhook")
    assert (
        await pg.fetchval("SELECT count(*) FROM refunds WHERE reason = $1", f"dispute {dispute_id}")
        == 1
    )
    assert len(await _refund_events(api, unsent[0]["id"])) == 1
    assert (
        await pg.fetchval(
            "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
            f"driver:{driver.id}",
        )
        == 0
    )


async def test_two_resolutions_at_once_refund_adjust_and_audit_once(
    dispute_api: DisputeApi, pg: PgConnection
) -> None:
    """Two admins resolving one dispute at the same moment: the second waits for the first's
    lock, then finds it resolved (a retry of sending: nothing left to send) — one refund row,
    one adjustment, one audit row (the reviewer's race in issue 18: both used to go through)."""
    api, s = dispute_api, dispute_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s)
    admin = await add_user(pg, s, Role.ADMIN)
    charger = await add_charger(pg, host, pricing_mode="per_kwh")
    session = await settled_session(pg, api, charger, driver)
    opened = await api.client.post(
        f"/sessions/{session.public_id}/disputes",
        json={"reason_code": "billed_wrong", "description": "Too much."},
        headers=driver.headers,
    )
    dispute_id = opened.json()["id"]
    body = {"outcome": "partial_refund", "refund_paise": 100, "note": "Some back."}
    answers = await asyncio.gather(
        *(
            api.client.post(
                f"/admin/disputes/{dispute_id}/resolve", json=body, headers=admin.headers
            )
            for _ in range(2)
        )
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    refunds = await pg.fetch(
        "SELECT amount_paise FROM refunds WHERE reason = $1", f"dispute {dispute_id}"
    )
    assert [r["amount_paise"] for r in refunds] == [100]
    assert (
        await pg.fetchval(
            "SELECT count(DISTINCT txn_id) FROM ledger_entries "
            "WHERE source = 'dispute_adjustment' AND session_id = $1",
            session.pk,
        )
        == 1
    )
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'dispute.resolve' AND entity_id = $1",
            dispute_id,
        )
        == 1
    )
