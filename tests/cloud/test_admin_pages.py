"""The admin console's pages without a browser (cloud/web/admin.py) and the host's KYC,
reviews, calendar, photos and live-list pages (cloud/web/host_kyc.py, host_reviews.py,
host_calendar.py, host_photos.py, host.py), in one test over one world (it is costly: a
session paid and settled): what each refuses and how, that the data shown is masked, that a
document read is audited, and that every decision lands through the services. The browser
walk is tests/cloud/test_admin_pages_flow.py."""

from __future__ import annotations

import re

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection, PgRecord
from protocols.ids import new_ulid
from tests.support.console_world import (
    AADHAAR,
    PAN,
    PNG,
    ConsoleWorld,
    console_world,
    kyc_files,
    unverified,
)
from tests.support.market import Api, add_user
from tests.support.page_clients import csrf_of, signed_in

pytestmark = pytest.mark.integration


async def test_the_console_and_the_hosts_pages_refuse_clearly_and_decide_through_the_services(
    market_api: Api, pg: PgConnection
) -> None:
    state = market_api.app.state.cloud
    world = await console_world(pg, market_api.client, market_api.settings, state)
    async with signed_in(market_api, world.host) as host_client:
        # Not an admin: the 403 page, on every console page.
        page = await host_client.get("/app/admin")
        assert page.status_code == 403
        assert "This page is for the platform" in page.text
    async with signed_in(market_api, world.admin) as client:
        home = await client.get("/app/admin")
        assert home.status_code == 200, home.text
        assert await _text(home.text, "q-kyc") == "1"
        assert await _text(home.text, "q-disputes") == "1"
        token = csrf_of(home.text)

        # KYC: masked on the page, the document decrypted for the admin (and the read
        # audited), a rejection needs a reason.
        detail = await client.get(f"/app/admin/kyc/{world.submission_id}")
        assert detail.status_code == 200
        assert PAN not in detail.text
        assert "XXXXX1234F" in detail.text
        assert AADHAAR.replace(" ", "") not in detail.text.replace(" ", "")
        assert "XXXX-XXXX-0124" in detail.text
        doc = await client.get(f"/app/admin/kyc/{world.submission_id}/documents/pan_card")
        assert (doc.status_code, doc.content) == (200, PNG)
        assert doc.headers["cache-control"] == "no-store"
        audited = await pg.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'kyc.document_read' "
            "AND actor_user_id = $1",
            world.admin.id,
        )
        assert audited == 1
        no_reason = await client.post(
            f"/app/admin/kyc/{world.submission_id}/reject", data={"csrf": token, "reason": "  "}
        )
        assert no_reason.status_code == 422
        assert "reason" in no_reason.text
        no_token = await client.post(f"/app/admin/kyc/{world.submission_id}/verify")
        assert no_token.status_code == 403
        verified = await client.post(
            f"/app/admin/kyc/{world.submission_id}/verify", data={"csrf": token}
        )
        assert verified.status_code == 303
        again = await client.post(
            f"/app/admin/kyc/{world.submission_id}/verify", data={"csrf": token}
        )
        assert again.status_code == 409, again.text
        assert (
            await pg.fetchval("SELECT kyc_status FROM hosts WHERE id = $1", world.host.host_id)
            == "verified"
        )

        # Disputes: a refund above what the session's payments have left is refused (the
        # service's rule); a partial refund without an amount is the schema's refusal.
        url = f"/app/admin/disputes/{world.dispute_id}/resolve"
        base = {
            "csrf": token,
            "outcome": "partial_refund",
            "charged_to": "host",
            "note": "Meter read 5 kWh.",
        }
        missing = await client.post(url, data={**base, "refund": ""})
        assert missing.status_code == 422, missing.text
        queue = await client.get("/app/admin/disputes")
        left = re.search(r'data-left="(\d+)"', queue.text)
        assert left, "no amount left to refund on the dispute"
        captured = await pg.fetchval(
            "SELECT sum(p.captured_paise) - coalesce((SELECT sum(r.amount_paise) FROM refunds r "
            "JOIN payments q ON q.id = r.payment_id JOIN sessions s ON s.id = q.session_id "
            "WHERE s.device_session_id = $1 AND r.status <> 'failed'), 0) FROM payments p "
            "JOIN sessions s ON s.id = p.session_id WHERE s.device_session_id = $1",
            world.session_id,
        )
        assert int(left.group(1)) == captured > 0
        too_much = await client.post(url, data={**base, "refund": "1,00,000"})
        assert too_much.status_code == 409, too_much.text
        status = await pg.fetchval("SELECT status FROM disputes WHERE id = $1", world.dispute_id)
        assert status == "open"

        # Users: disabled with a reason (its bearer token stops working), enabled again.
        users = await client.get("/app/admin/users", params={"q": world.driver.email})
        assert world.driver.id in users.text
        disable = f"/app/admin/users/{world.driver.id}/disable"
        assert (await client.post(disable, data={"csrf": token})).status_code == 422
        done = await client.post(disable, data={"csrf": token, "reason": "Chargeback fraud"})
        assert done.status_code == 303
        me = await market_api.client.get("/me", headers=world.driver.headers)
        assert me.status_code == 401
        enabled = await client.post(
            f"/app/admin/users/{world.driver.id}/enable", data={"csrf": token}
        )
        assert enabled.status_code == 303
        assert (
            await pg.fetchval("SELECT disabled_at FROM users WHERE id = $1", world.driver.id)
            is None
        )

        # Reviews: hidden with a reason, shown again with a note.
        hide = await client.post(
            f"/app/admin/reviews/{world.review_id}/hide", data={"csrf": token, "reason": "Abusive"}
        )
        assert hide.status_code == 303
        hidden = await client.get("/app/admin/reviews", params={"hidden": "true"})
        assert world.review_id in hidden.text
        assert "Abusive" in hidden.text
        restore = await client.post(
            f"/app/admin/reviews/{world.review_id}/restore",
            data={"csrf": token, "note": "Checked: fair"},
        )
        assert restore.status_code == 303
        assert (
            await pg.fetchval("SELECT hidden_at FROM reviews WHERE id = $1", world.review_id)
            is None
        )

        # Payments and payouts: the driver's prepayment is listed; a pending payout is
        # rejected with a reason, and approving it then is the service's refusal.
        payout_id = new_ulid()
        await pg.execute(
            "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end) "
            "VALUES ($1, $2, 100, now() - interval '7 days', now())",
            payout_id,
            world.host.host_id,
        )
        money = await client.get("/app/admin/money")
        assert "data-payment=" in money.text
        assert f'data-payout="{payout_id}"' in money.text
        url = f"/app/admin/payouts/{payout_id}"
        assert (await client.post(f"{url}/reject", data={"csrf": token})).status_code == 422
        rejected = await client.post(f"{url}/reject", data={"csrf": token, "reason": "Wrong IFSC"})
        assert rejected.status_code == 303
        status = await pg.fetchval("SELECT status FROM payouts WHERE id = $1", payout_id)
        assert status == "rejected"
        late = await client.post(f"{url}/approve", data={"csrf": token})
        assert late.status_code == 409, late.text

    await _the_hosts_pages(market_api, pg, world)


async def _text(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert found, f"no #{element_id}"
    return found.group(1).strip()


async def _the_hosts_pages(market_api: Api, pg: PgConnection, world: ConsoleWorld) -> None:
    """The host's KYC form, reviews, calendar, photos and live list (after the console's
    part: the same world, which the console left with the review shown)."""
    # A second host, with nothing sent yet, for the KYC form.
    fresh = await add_user(pg, market_api.settings, Role.HOST)
    await unverified(pg, fresh)
    async with signed_in(market_api, fresh) as client:
        page = await client.get("/app/host/kyc")
        assert page.status_code == 200
        assert 'enctype="multipart/form-data"' in page.text
        token = csrf_of(page.text)
        wrong = await client.post(
            "/app/host/kyc", data={"csrf": token, "pan": "ABC123"}, files=kyc_files()
        )
        assert wrong.status_code == 422
        assert 'id="e-pan"' in wrong.text
        assert 'value="ABC123"' in wrong.text
        no_token = await client.post("/app/host/kyc", data={"pan": PAN}, files=kyc_files())
        assert no_token.status_code == 403
        sent = await client.post(
            "/app/host/kyc", data={"csrf": token, "pan": PAN, "aadhaar": ""}, files=kyc_files()
        )
        assert sent.status_code == 303, sent.text
        row = await _row(
            pg,
            "SELECT status, aadhaar_masked FROM kyc_submissions s JOIN hosts "
            "h ON h.id = s.host_id WHERE h.user_id = $1",
            fresh.id,
        )
        assert (row["status"], row["aadhaar_masked"]) == ("submitted", None)
        after = await client.get("/app/host/kyc")
        assert "Being checked" in after.text
        assert 'type="file"' not in after.text

    async with signed_in(market_api, world.host) as client:
        reviews = await client.get("/app/host/reviews")
        assert world.review_id in reviews.text
        token = csrf_of(reviews.text)
        url = f"/app/host/reviews/{world.review_id}/reply"
        assert (await client.post(url, data={"csrf": token, "text": " "})).status_code == 422
        replied = await client.post(url, data={"csrf": token, "text": "Sorry: fixed the cable."})
        assert replied.status_code == 303
        second = await client.post(url, data={"csrf": token, "text": "Again"})
        assert second.status_code == 409
        public = await market_api.client.get(f"/chargers/{world.approved_charger}/reviews")
        assert public.json()["items"][0]["host_reply"] == "Sorry: fixed the cable."

        # The calendar: a wrong time is named and the form kept; the week is replaced.
        cal = f"/app/host/chargers/{world.approved_charger}/availability"
        assert (await client.get(cal)).status_code == 200
        bad = await client.post(
            cal, data={"csrf": token, "open_0_1": "08:00", "close_0_1": "25:00"}
        )
        assert bad.status_code == 422
        assert 'value="25:00"' in bad.text
        saved = await client.post(
            cal,
            data={
                "csrf": token,
                "open_0_1": "08:00",
                "close_0_1": "20:00",
                "open_5_1": "10:00",
                "close_5_1": "24:00",
            },
        )
        assert saved.status_code == 303
        windows = await pg.fetch(
            "SELECT weekday, opens_at::text, closes_at::text FROM availability_windows "
            "WHERE charger_id = $1 ORDER BY weekday",
            world.approved_charger,
        )
        assert [(w[0], w[1], w[2]) for w in windows] == [
            (0, "08:00:00", "20:00:00"),
            (5, "10:00:00", "23:59:59.999999"),
        ]
        shown = await client.get(cal)  # midnight is shown as typed: 24:00
        assert re.search(r'name="close_5_1"[^>]*value="24:00"', shown.text)
        period_form = {
            "csrf": token,
            "start": "2031-01-01T10:00",
            "end": "2031-01-01T12:30",
            "reason": "Repairs",
        }
        block = await client.post(
            f"/app/host/chargers/{world.approved_charger}/blocked-periods", data=period_form
        )
        assert block.status_code == 303, block.text
        period = await _row(
            pg,
            "SELECT id, lower(period) AS s FROM blocked_periods WHERE charger_id = $1",
            world.approved_charger,
        )
        assert period["s"].isoformat() == "2031-01-01T04:30:00+00:00"  # 10:00 IST
        gone = await client.post(
            f"/app/host/chargers/{world.approved_charger}/blocked-periods/{period['id']}/delete",
            data={"csrf": token},
        )
        assert gone.status_code == 303
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM blocked_periods WHERE charger_id = $1", world.approved_charger
            )
            == 0
        )

        # Photos: uploaded in a multipart form carrying the CSRF token, shown, removed.
        edit = f"/app/host/chargers/{world.approved_charger}"
        photo_form = {"photo": ("gate.png", PNG, "image/png")}
        no_token = await client.post(f"{edit}/photos", files=photo_form)
        assert no_token.status_code == 403
        fake = {"photo": ("x.png", b"GIF89a not a png", "image/png")}
        not_image = await client.post(f"{edit}/photos", data={"csrf": token}, files=fake)
        assert not_image.status_code == 422
        added = await client.post(f"{edit}/photos", data={"csrf": token}, files=photo_form)
        assert added.status_code == 303, added.text
        photo_id = await pg.fetchval(
            "SELECT id FROM charger_photos WHERE charger_id = $1", world.approved_charger
        )
        assert f'data-photo="{photo_id}"' in (await client.get(edit)).text
        shown = await client.get(f"{edit}/photos/{photo_id}")
        assert (shown.status_code, shown.content) == (200, PNG)
        removed = await client.post(f"{edit}/photos/{photo_id}/delete", data={"csrf": token})
        assert removed.status_code == 303
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM charger_photos WHERE charger_id = $1", world.approved_charger
            )
            == 0
        )

        # The live list: the fragment alone, with both chargers' state.
        live = await client.get("/app/host/live")
        assert live.status_code == 200
        assert "<html" not in live.text
        assert world.approved_charger in live.text
        assert world.pending_charger in live.text
        assert live.headers["cache-control"] == "private, no-store"


async def _row(pg: PgConnection, query: str, *args: object) -> PgRecord:
    rows = await pg.fetch(query, *args)
    assert len(rows) == 1, rows
    return rows[0]
