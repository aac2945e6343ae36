"""Acceptance (issue 19, the driver's later pages) in a real browser against the API served by
uvicorn on loopback: the search page with its list and the Leaflet map (served by the app from
npm's files; no tile server: markers without a background) and a field error, a review and a
dispute with a photo from a receipt, my disputes showing the photo, amounts due, and the
checkout page (the dummy's UPI link and QR, paid with the test card through
``POST /app/payments/{id}/verify``); the search page in Hindi, served again by the service
worker with the network cut (the last search).

Each step is screenshot (artifacts/pages/<test>/) and checked with axe-core at 360x640 and
1280x800, light and dark: no serious or critical violation, and no Content-Security-Policy
report in the console. One browser for the whole walk (page loads are what costs).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from tests.cloud.test_reviews import add_session
from tests.support.bookings_fixtures import add_charger
from tests.support.browser import artifacts_dir, chromium, tour
from tests.support.flow_rig import wait_for
from tests.support.market import TEST_PASSWORD, add_user
from tests.support.mosquitto import Broker, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def served(
    db_url: str, broker: Broker, service_passwords: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[str, object]]:
    """The API under uvicorn on a free loopback port: (base URL, settings)."""
    from tests.support.cloud_env import make_settings

    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_MARKETPLACE_PHOTO_DIR=str(tmp_path / "photos"),
        CHARGEMITRA_AUTH_LOGIN_ATTEMPTS_PER_WINDOW="1000",
    )
    # The map is part of what is tested: Leaflet must be installed (deploy/dev/bootstrap.sh).
    assert (settings.marketplace.leaflet_dir / "leaflet.js").is_file(), (
        f"Leaflet is missing from {settings.marketplace.leaflet_dir}: run make bootstrap"
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(), name="api")

    async def started() -> bool:
        return bool(server.started)

    await wait_for(started, "the API")
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=30)


async def test_search_review_dispute_due_and_checkout_in_the_browser(
    served: tuple[str, object], pg: PgConnection, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, settings = served
    host = await add_user(pg, settings, Role.HOST)  # type: ignore[arg-type]
    driver = await add_user(pg, settings, Role.DRIVER)  # type: ignore[arg-type]
    chargers = [
        await add_charger(pg, host, pricing_mode="per_kwh", price_per_kwh_paise=1500),
        await add_charger(pg, host, pricing_mode="per_hour", max_power_w=22000),
    ]
    # Two places, so the map has two markers apart from the centre.
    await pg.execute(
        "UPDATE chargers SET latitude = 18.53, longitude = 73.86, name = 'Koregaon Park gate' "
        "WHERE id = $1",
        chargers[1].id,
    )
    session_id = await add_session(pg, chargers[0], driver)
    photo = tmp_path / "cable.png"
    photo.write_bytes(PNG)
    where = "lat=18.52&lon=73.85&radius_km=10"

    async with chromium() as browser, tour(browser, artifacts_dir(request.node.name)) as walk:
        page = walk.page
        # Search: the list and the map (Leaflet drew a marker per charger and the centre).
        await page.goto(f"{url}/app/search?{where}")
        assert await page.locator("#results > li").count() == 2
        await page.locator("#map.leaflet-container").wait_for()
        assert await page.locator("#map path.leaflet-interactive").count() == 3
        await walk.check("search")
        assert await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        # A wrong field: the message beside it (axe checks the error state too).
        await page.fill("#max_price", "cheap")
        await page.click("button[type=submit].primary")
        await page.locator("#max_price-error").wait_for()
        assert await page.get_attribute("#max_price", "aria-invalid") == "true"
        await walk.check("search-error")

        # Sign in, then the receipt's review.
        await page.goto(f"{url}/app/signin?next=/app/sessions/{session_id}/review")
        await page.fill("#email", driver.email)
        await page.fill("#password", TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"**/app/sessions/{session_id}/review")
        await walk.check("review")
        await page.get_by_label("4 stars").check()
        await page.fill("#text", "Easy to find, clean spot")
        await page.click("#send-review")
        await page.wait_for_url("**/receipt?reviewed=1")
        assert "Thank you for the review." in await page.inner_text("main")

        # Report a problem with a photo; my disputes show it.
        await page.click("#dispute")
        await page.wait_for_url(f"**/app/sessions/{session_id}/dispute")
        await page.select_option("#reason", "damage")
        await page.fill("#description", "The cable's plug was cracked")
        await page.set_input_files("#photos", str(photo))
        await walk.check("dispute-form")
        await page.click("#send-dispute")
        await page.wait_for_url("**/app/disputes?opened=*")
        shown = page.locator(".photos img")
        assert await shown.count() == 1
        assert await shown.evaluate("img => img.naturalWidth") == 1  # the photo really loads
        await walk.check("disputes")

        # Amounts due: nothing owed.
        await page.goto(f"{url}/app/due")
        assert await page.inner_text("#due") == "Nothing is due."
        await walk.check("due")

        # The checkout page: UPI intent link and QR, paid by the test card, then the unlock
        # (no agent runs here: the charger is offline, which the page says).
        await page.goto(f"{url}/app/chargers/{chargers[1].id}/quote?connector=1&duration_min=60")
        await page.click("#other-ways")
        await page.wait_for_url("**/checkout")
        link = await page.get_attribute("a[href^='upi://pay']", "href")
        assert link is not None
        assert "am=" in link
        await walk.check("checkout")
        await page.fill("#card", "4111 1111 1111 1111")
        await page.click("#pay")
        await page.wait_for_load_state()
        assert "offline" in (await page.inner_text("main")).lower()
        paid = await pg.fetchval(
            "SELECT count(*) FROM payments WHERE user_id = $1 AND status = 'authorized'", driver.id
        )
        assert paid == 1

        # The search page in Hindi.
        await page.goto(f"{url}/app/search?{where}&lang=hi")
        assert await page.get_attribute("html", "lang") == "hi-IN"
        await page.get_by_role("heading", name="चार्जर खोजें").wait_for()
        assert await page.evaluate("navigator.serviceWorker.controller !== null")
        await walk.check("search-hindi")

        # With the network cut, the service worker serves the last search (whatever is asked).
        await walk.context.set_offline(True)
        await page.goto(f"{url}/app/search?lat=18.6&lon=73.9")
        await page.get_by_role("heading", name="चार्जर खोजें").wait_for()
        assert await page.locator("#results > li").count() == 2
        await walk.context.set_offline(False)

    assert not walk.axe_failures, "\n".join(walk.axe_failures)
    assert not walk.csp_reports, walk.csp_reports
