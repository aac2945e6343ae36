"""The driver's pages without a browser (cloud/web/search.py, cloud/web/driver.py): the search
form as a plain ``GET`` (no JavaScript) answering what ``GET /chargers`` answers for the same
filters, its field errors; paying with Razorpay Checkout on the pages (the form posts the
handler's fields to the verify route; the signature is checked against the fake Razorpay's
order, a forged one is refused); a review and a dispute with photos through their services.
The browser walk is tests/cloud/test_driver_pages_flow.py."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import event

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.chargers.qr import new_short_code
from cloud.pg import PgConnection
from tests.cloud.test_pages import _address, _csrf
from tests.cloud.test_reviews import add_session
from tests.support import fake_razorpay, fake_stripe
from tests.support.bookings_fixtures import ListedCharger, add_charger
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.market import TEST_PASSWORD, Api, ApiUser, add_user
from tests.support.mosquitto import Broker

#: A 1x1 PNG: a real image for the dispute's photo check.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@asynccontextmanager
async def signed_in(app: Any, user: ApiUser) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in by the password form (a cookie session)."""
    transport = httpx.ASGITransport(app=app, client=(_address(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api") as client:
        token = _csrf((await client.get("/app/signin")).text)
        form = {"email": user.email, "password": TEST_PASSWORD, "action": "signin", "csrf": token}
        signed = await client.post("/app/signin/password", data=form)
        assert signed.status_code == 303, signed.text
        yield client


def _ids(html: str) -> list[str]:
    return re.findall(r'<li class="card" id="hit-([0-9A-Z]+)"', html)


async def test_the_search_form_answers_what_the_api_answers_without_javascript(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host = await add_user(pg, s, Role.HOST)
    cheap = await add_charger(pg, host, pricing_mode="per_kwh", price_per_kwh_paise=1500)
    dear = await add_charger(pg, host, pricing_mode="per_kwh", price_per_kwh_paise=2500)
    hourly = await add_charger(pg, host, pricing_mode="per_hour", max_power_w=22000)
    await pg.execute("UPDATE chargers SET rating_sum = 9, rating_count = 2 WHERE id = $1", dear.id)
    where = {"lat": "18.52", "lon": "73.85", "radius_km": "10"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=market_api.app), base_url="https://api"
    ) as client:
        cases: list[tuple[dict[str, str], dict[str, str | int]]] = [
            ({}, {}),
            (
                {"max_price": "20", "mode": "per_kwh"},
                {"max_price_paise": 2000, "pricing_mode": "per_kwh"},
            ),
            ({"min_kw": "11"}, {"min_kw": 11}),
            ({"rating": "4"}, {"min_rating": 4}),
            (
                {"connector": "Type2", "verified": "1"},
                {"connector_type": "Type2", "verified_host": "true"},
            ),
        ]
        for form, api in cases:
            page = await client.get("/app/search?" + urlencode({**where, **form}))
            assert page.status_code == 200, page.text
            assert "<script" not in page.text.split("<main", 1)[1].split("</main>")[0]
            listed = await client.get(
                "/chargers?" + urlencode({**where, **api}), headers={"accept": "application/json"}
            )
            assert listed.status_code == 200, listed.text
            assert _ids(page.text) == [hit["id"] for hit in listed.json()["items"]], form
        assert set(_ids((await client.get("/app/search?" + urlencode(where))).text)) == {
            cheap.id,
            dear.id,
            hourly.id,
        }
        # The filters really filter (not vacuous): a price cap leaves the cheap one only.
        capped = await client.get(
            "/app/search?" + urlencode({**where, "max_price": "20", "mode": "per_kwh"})
        )
        assert _ids(capped.text) == [cheap.id]
        assert _ids(
            (await client.get("/app/search?" + urlencode({**where, "rating": "4"}))).text
        ) == [dear.id]
        # A wrong field: 422, the message beside it, what was typed kept.
        wrong = await client.get("/app/search?" + urlencode({**where, "max_price": "abc"}))
        assert wrong.status_code == 422
        assert 'id="max_price-error"' in wrong.text
        assert 'value="abc"' in wrong.text
        # The API's own rule between parameters (a window of at most 7 days), on the form.
        long = {**where, "when": "at", "date": "2030-01-01", "time": "10:00", "hours": "200"}
        refused = await client.get("/app/search?" + urlencode(long))
        assert refused.status_code == 422
        assert 'id="hours-error"' in refused.text
        # The list links to the charger's page.
        jump = await client.get(f"/app/chargers/{cheap.id}")
        assert jump.status_code == 303
        assert jump.headers["location"].startswith("/c/")


@pytest.fixture
def rzp() -> object:
    with fake_razorpay.fake_razorpay() as fake:
        yield fake


@pytest.fixture
async def razorpay_app(
    db_url: str, broker: Broker, service_passwords: dict[str, str], rzp: FakeRazorpay
) -> AsyncIterator[Api]:
    from tests.support.cloud_env import make_settings

    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_PAYMENTS_PROVIDER="razorpay",
        CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID=fake_razorpay.KEY_ID,
        CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET=fake_razorpay.KEY_SECRET,
        CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET=fake_razorpay.WEBHOOK_SECRET,
        CHARGEMITRA_PAYMENTS_RAZORPAY_BASE_URL=rzp.url,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, settings)


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def test_razorpay_checkout_on_the_pages_posts_the_handler_fields_and_is_verified(
    razorpay_app: Api, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    s = razorpay_app.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await add_charger(pg, host)
    async with signed_in(razorpay_app.app, driver) as client:
        quote = await client.get(f"/app/chargers/{charger.id}/quote?connector=1&duration_min=60")
        assert quote.status_code == 200, quote.text
        assert f'action="/app/chargers/{charger.id}/checkout"' in quote.text
        form = {"csrf": _csrf(quote.text), "connector": "1", "duration_min": "60"}
        page = await client.post(f"/app/chargers/{charger.id}/checkout", data=form)
        assert page.status_code == 200, page.text
        # The only external script: Razorpay's checkout.js, and the CSP allows exactly it.
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        assert [u for u in scripts if not u.startswith("/")] == [
            "https://checkout.razorpay.com/v1/checkout.js"
        ]
        csp = page.headers["content-security-policy"]
        script_src = next(p for p in csp.split("; ") if p.startswith("script-src"))
        assert script_src == "script-src 'self' https://checkout.razorpay.com/v1/checkout.js"
        assert "'unsafe-inline'" not in csp
        action = re.search(r'action="(/app/payments/([0-9A-Z]+)/verify)"', page.text)
        assert action, page.text
        url, payment_id = action.group(1), action.group(2)
        order_id = re.search(r'data-order="([^"]+)"', page.text)
        assert order_id
        assert order_id.group(1) in rzp.orders
        fields = {
            name: _hidden(page.text, name)
            for name in (
                "csrf",
                "charger_id",
                "connector",
                "razorpay_payment_id",
                "razorpay_order_id",
                "razorpay_signature",
            )
        }
        # Razorpay's handler fills the three fields; a forged signature is refused.
        paid_id, signature = rzp.authorize(order_id.group(1))
        forged = {
            **fields,
            "razorpay_payment_id": paid_id,
            "razorpay_order_id": order_id.group(1),
            "razorpay_signature": "0" * 64,
        }
        refused = await client.post(url, data=forged)
        assert refused.status_code == 400, refused.text
        status = "SELECT status FROM payments WHERE id = $1"
        assert await pg.fetchval(status, payment_id) == "created"
        # A genuine signature for another order (a cheaper one) does not verify either.
        other = await rzp_order(razorpay_app, driver)
        other_pay, other_sig = rzp.authorize(other)
        swapped = {**forged, "razorpay_payment_id": other_pay, "razorpay_signature": other_sig}
        assert (await client.post(url, data=swapped)).status_code == 400
        assert await pg.fetchval(status, payment_id) == "created"
        # The handler's own answer is verified and the payment authorized; the unlock that
        # follows finds the charger's agent offline (none runs here) and says so.
        good = {**forged, "razorpay_signature": signature}
        answered = await client.post(url, data=good)
        assert await pg.fetchval(status, payment_id) == "authorized"
        assert answered.status_code == 409, answered.text
        # Without the CSRF token nothing is verified.
        assert (await client.post(url, data={**good, "csrf": "x"})).status_code == 403


async def rzp_order(api: Api, driver: ApiUser) -> str:
    """Another order of the fake Razorpay's (another payment of the driver's)."""
    from cloud.payments.service import open_order

    state = api.app.state.cloud
    _payment, order = await open_order(
        state.sessions, state.payments, user_id=driver.id, amount_paise=100
    )
    return order.order_ref


async def _completed(pg: PgConnection, market_api: Api) -> tuple[ListedCharger, ApiUser, str]:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await add_charger(pg, host)
    return charger, driver, await add_session(pg, charger, driver)


async def test_a_review_and_a_dispute_with_photos_from_the_receipt(
    market_api: Api, pg: PgConnection
) -> None:
    charger, driver, session_id = await _completed(pg, market_api)
    other = await add_user(pg, market_api.settings, Role.DRIVER)
    async with signed_in(market_api.app, driver) as client:
        form = await client.get(f"/app/sessions/{session_id}/review")
        token = _csrf(form.text)
        url = f"/app/sessions/{session_id}/review"
        no_stars = await client.post(url, data={"csrf": token, "text": "ok"})
        assert no_stars.status_code == 422
        assert "review-error" in no_stars.text
        sent = await client.post(url, data={"csrf": token, "rating": "4", "text": "Clean spot"})
        assert sent.status_code == 303, sent.text
        (row,) = await pg.fetch(
            "SELECT rating, body FROM reviews WHERE charger_id = $1", charger.id
        )
        assert (row["rating"], row["body"]) == (4, "Clean spot")
        again = await client.post(url, data={"csrf": token, "rating": "5"})
        assert again.status_code == 409

        # A dispute with two photos, one multipart form.
        dispute_url = f"/app/sessions/{session_id}/dispute"
        token = _csrf((await client.get(dispute_url)).text)
        files = [("photos", ("a.png", PNG, "image/png")), ("photos", ("b.png", PNG, "image/png"))]
        bad = await client.post(
            dispute_url,
            data={"csrf": token, "reason_code": "damage", "description": "x"},
            files=[("photos", ("c.txt", b"not an image", "text/plain"))],
        )
        assert bad.status_code == 422
        assert "dispute-error" in bad.text
        assert await pg.fetchval("SELECT count(*) FROM disputes") == 0  # all or nothing
        opened = await client.post(
            dispute_url,
            files=files,
            data={"csrf": token, "reason_code": "damage", "description": "Cable was cut"},
        )
        assert opened.status_code == 303, opened.text
        dispute_id = await pg.fetchval("SELECT id FROM disputes")
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM dispute_photos WHERE dispute_id = $1", dispute_id
            )
            == 2
        )
        listed = await client.get("/app/disputes")
        photo_urls = re.findall(r'src="(/app/disputes/[0-9A-Z]+/photos/[0-9A-Z]+)"', listed.text)
        assert len(photo_urls) == 2
        assert "Cable was cut" in listed.text
        photo = await client.get(photo_urls[0])
        assert photo.status_code == 200
        assert photo.content == PNG
    # Someone else sees neither the dispute nor its photos.
    async with signed_in(market_api.app, other) as stranger:
        assert (await stranger.get(photo_urls[0])).status_code == 404
        assert "Cable was cut" not in (await stranger.get("/app/disputes")).text
        token = _csrf((await stranger.get(url)).text)
        review = await stranger.post(url, data={"csrf": token, "rating": "1"})
        assert review.status_code == 403


async def test_the_qr_page_keeps_the_listing_and_reads_the_live_state_each_visit(
    market_api: Api, pg: PgConnection
) -> None:
    """cloud/web/qrview.py: a second scan reads only the device and its connectors (no listing,
    no meter readings), and a connector's new state shows at once although the listing is
    kept; a code that matches nothing is not kept (a listing that appears is found)."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    charger = await add_charger(pg, host)
    code = new_short_code()
    await pg.execute("UPDATE chargers SET qr_code = $2 WHERE id = $1", charger.id, code)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = market_api.app.state.cloud.engine.sync_engine
    html = {"accept": "text/html"}
    event.listen(engine, "before_cursor_execute", seen)
    try:
        first = await market_api.client.get(f"/c/{code}", headers=html)
        assert first.status_code == 200
        listing_reads = len(statements)
        statements.clear()
        # The device's presence counts as online: the stored connector state is shown.
        await pg.execute(
            "UPDATE devices SET online = true, last_seen_at = now() WHERE id = $1",
            charger.device_id,
        )
        await pg.execute(
            "UPDATE connectors SET status = 'Faulted' WHERE charger_id = $1", charger.id
        )
        second = await market_api.client.get(f"/c/{code}", headers=html)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert second.status_code == 200
    assert "Out of order" in second.text  # the live state, read again
    tables = [re.search(r"FROM (\w+)", s) for s in statements]
    assert sorted(t.group(1) for t in tables if t) == ["connectors", "devices"]
    assert listing_reads > len(statements)
    # A code nobody has yet: 404, and not kept once it is given to a charger.
    other = new_short_code()
    assert (await market_api.client.get(f"/c/{other}", headers=html)).status_code == 404
    await pg.execute("UPDATE chargers SET qr_code = $2 WHERE id = $1", charger.id, other)
    assert (await market_api.client.get(f"/c/{other}", headers=html)).status_code == 200


async def _pay_on_the_checkout_page(client: httpx.AsyncClient, page: httpx.Response) -> str:
    """The dummy's checkout page paid with the test card; returns where it led."""
    assert page.status_code == 200, page.text
    action = re.search(r'action="(/app/payments/[0-9A-Z]+/verify)"', page.text)
    assert action, page.text
    form = {"csrf": _csrf(page.text), "card_number": "4111 1111 1111 1111"}
    for name in ("booking_id", "charger_id", "connector"):
        found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
        if found:
            form[name] = found.group(1)
    paid = await client.post(action.group(1), data=form)
    assert paid.status_code == 303, paid.text
    return paid.headers["location"]


async def test_a_booking_and_an_amount_due_are_paid_from_their_pages(
    market_api: Api, pg: PgConnection
) -> None:
    """My bookings offers "Pay" for an unpaid booking (``POST /bookings/{id}/payment``'s
    service, the amount left to pay), paid on the checkout page; then an overstay leaves an
    amount due (as in tests/cloud/test_booking_money.py): its page shows it, "Pay" opens its
    payment (``POST /amount-due/payment``'s service) for the same amount, the test card pays it
    through the verify route, and nothing is due any more."""
    from tests.cloud.test_booking_money import (
        _book,
        _charger,
        _move_booking,
        _settle,
        _stopped_session,
    )

    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger)
    async with signed_in(market_api.app, driver) as client:
        listed = await client.get("/app/bookings")
        assert f'action="/app/bookings/{booking["id"]}/pay"' in listed.text
        page = await client.post(
            f"/app/bookings/{booking['id']}/pay", data={"csrf": _csrf(listed.text)}
        )
        assert await _pay_on_the_checkout_page(client, page) == "/app/bookings?paid=1"
        assert f"/app/bookings/{booking['id']}/pay" not in (await client.get("/app/bookings")).text
    held = (
        "SELECT coalesce(sum(amount_paise), 0) FROM payments "
        "WHERE booking_id = $1 AND status = 'authorized'"
    )
    assert await pg.fetchval(held, booking["id"]) == booking["amount_paise"]
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    await _move_booking(pg, booking["id"], end - timedelta(hours=1), end)
    pk, _public_id = await _stopped_session(
        pg,
        charger,
        booking["id"],
        started=end - timedelta(hours=1),
        stopped=end + timedelta(minutes=30),
    )
    await _settle(market_api, pk)
    async with signed_in(market_api.app, driver) as client:
        page = await client.get("/app/due")
        due = re.search(r'<p class="price" id="due">([^<]+)</p>', page.text)
        assert due, page.text
        checkout_page = await client.post("/app/due/pay", data={"csrf": _csrf(page.text)})
        assert due.group(1) in checkout_page.text  # the same amount, to the paisa
        assert await _pay_on_the_checkout_page(client, checkout_page) == "/app/due?paid=1"
        after = await client.get("/app/due")
        assert 'id="due">Nothing is due.' in after.text
        # Nothing due: a second "Pay" is a page saying so, no payment opened.
        again = await client.post("/app/due/pay", data={"csrf": _csrf(after.text)})
        assert again.status_code == 409


async def test_stripe_checkout_on_the_pages_posts_the_payment_intent_and_is_verified(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> None:
    """With Stripe configured the checkout page loads exactly stripe.js (its CSP names it and
    Stripe's frames), carries the PaymentIntent's client secret and the publishable key, and
    the intent id posted back is verified by reading the intent from (the fake) Stripe: not
    yet authorized is refused, authorized is held."""
    from tests.support.cloud_env import make_settings

    with fake_stripe.fake_stripe() as stp:
        settings = make_settings(
            db_url,
            broker,
            service_passwords["cloud-api"],
            username="cloud-api",
            CHARGEMITRA_PAYMENTS_PROVIDER="stripe",
            CHARGEMITRA_PAYMENTS_STRIPE_SECRET_KEY=fake_stripe.SECRET_KEY,
            CHARGEMITRA_PAYMENTS_STRIPE_WEBHOOK_SECRET=fake_stripe.WEBHOOK_SECRET,
            CHARGEMITRA_PAYMENTS_STRIPE_BASE_URL=stp.url,
            CHARGEMITRA_PAYMENTS_STRIPE_PUBLISHABLE_KEY="pk_test_pages",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            host = await add_user(pg, settings, Role.HOST)
            driver = await add_user(pg, settings, Role.DRIVER)
            charger = await add_charger(pg, host)
            async with signed_in(app, driver) as client:
                quote = await client.get(f"/app/chargers/{charger.id}/quote?duration_min=60")
                form = {"csrf": _csrf(quote.text), "connector": "1", "duration_min": "60"}
                page = await client.post(f"/app/chargers/{charger.id}/checkout", data=form)
                assert page.status_code == 200, page.text
                scripts = re.findall(r'<script src="([^"]+)"', page.text)
                assert [u for u in scripts if not u.startswith("/")] == [
                    "https://js.stripe.com/v3/"
                ]
                csp = page.headers["content-security-policy"]
                assert "script-src 'self' https://js.stripe.com/v3/;" in csp
                assert 'data-key="pk_test_pages"' in page.text
                secret = re.search(r'data-secret="([^"]+)"', page.text)
                assert secret
                intent = secret.group(1).split("_secret_")[0]
                action = re.search(r'action="(/app/payments/([0-9A-Z]+)/verify)"', page.text)
                assert action
                fields = {
                    "csrf": _csrf(page.text),
                    "payment_intent": intent,
                    "charger_id": charger.id,
                    "connector": "1",
                }
                status = "SELECT status FROM payments WHERE id = $1"
                early = await client.post(action.group(1), data=fields)
                assert early.status_code in {400, 402, 409}, early.text
                assert await pg.fetchval(status, action.group(2)) != "authorized"
                stp.authorize(intent)
                held = await client.post(action.group(1), data=fields)
                assert held.status_code == 409, held.text  # paid; the agent is offline
                assert await pg.fetchval(status, action.group(2)) == "authorized"
