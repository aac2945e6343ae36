"""Access ends when the account or its role does (issue 13, item 5).

Every test runs the API as real ``chargemitra-cloud serve`` processes (uvicorn, their own
pools and notification listeners) against the real database and Redis, and changes
accounts the way an operator or another instance would: straight in PostgreSQL, or through
the API. A change reaches each instance by a PostgreSQL notification, so a test that warmed
an instance's cache first waits (bounded) for the refusal instead of assuming it is there on
the very next request; on the old code the refusal never comes and the wait fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
import websockets

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from cloud.settings import Settings
from tests.support.api_process import clear_rate_limits
from tests.support.bookings_fixtures import add_charger, booking_body, next_slot, serve_api
from tests.support.cloud_env import make_settings
from tests.support.market import TEST_PASSWORD, ApiUser, add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
#: How long a change may take to reach an instance (it takes milliseconds; generous).
PROPAGATION_DEADLINE_S = 10.0


@pytest.fixture
def api_settings(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> Settings:
    return make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")


@pytest.fixture
async def api(api_settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await clear_rate_limits()
    async with (
        serve_api(api_settings, tmp_path / "api.log") as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


async def _refused_soon(
    call: Callable[[], Awaitable[httpx.Response]], status: int = 401
) -> httpx.Response:
    """``call()`` until it answers ``status`` (a change reaches a warm instance by
    notification); fails with the last answer if it never does."""
    answer = await call()
    try:
        async with asyncio.timeout(PROPAGATION_DEADLINE_S):
            while answer.status_code != status:
                await asyncio.sleep(0.05)
                answer = await call()
    except TimeoutError:
        pytest.fail(f"still {answer.status_code} (not {status}): {answer.text}")
    return answer


def _is_problem(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert answer.json()["status"] == status


async def test_disabled_and_deleted_accounts_cannot_book_401_never_500(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    host = await add_user(pg, api_settings, Role.HOST)
    charger = await add_charger(pg, host)
    start = next_slot(datetime.now(UTC), days=2)
    disabled = await add_user(pg, api_settings)
    deleted = await add_user(pg, api_settings)
    for user in (disabled, deleted):  # both work, and the instance has them cached
        assert (await api.get("/bookings", headers=user.headers)).status_code == 200

    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", disabled.id)
    await pg.execute("DELETE FROM users WHERE id = $1", deleted.id)

    for user, hour in ((disabled, 0), (deleted, 2)):
        await _refused_soon(partial(api.get, "/bookings", headers=user.headers))
        body = booking_body(
            charger, start + timedelta(hours=hour), start + timedelta(hours=hour + 1)
        )
        _is_problem(await api.post("/bookings", json=body, headers=user.headers), 401)
    assert await pg.fetchval("SELECT count(*) FROM bookings") == 0
    # Enabling the account again does not bring back tokens issued before it was disabled.
    await pg.execute("UPDATE users SET disabled_at = NULL WHERE id = $1", disabled.id)
    _is_problem(await api.get("/bookings", headers=disabled.headers), 401)


async def test_a_demoted_admin_loses_admin_routes_on_every_instance(
    api_settings: Settings, pg: PgConnection, tmp_path: Path
) -> None:
    admin = await add_user(pg, api_settings, Role.ADMIN, Role.DRIVER)
    async with AsyncExitStack() as stack:
        clients = []
        for name in ("a", "b"):
            url = await stack.enter_async_context(
                serve_api(api_settings, tmp_path / f"api-{name}.log")
            )
            clients.append(await stack.enter_async_context(httpx.AsyncClient(base_url=url)))
        for client in clients:
            assert (await client.get("/admin/chargers", headers=admin.headers)).status_code == 200

        await pg.execute("DELETE FROM user_roles WHERE user_id = $1 AND role = 'admin'", admin.id)

        for client in clients:
            answer = await _refused_soon(
                partial(client.get, "/admin/chargers", headers=admin.headers), 403
            )
            _is_problem(answer, 403)
            # Still a driver: the token stands, only the role went.
            assert (await client.get("/bookings", headers=admin.headers)).status_code == 200


async def _login(api: httpx.AsyncClient, user: ApiUser) -> dict[str, str]:
    answer = await api.post("/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert answer.status_code == 200, answer.text
    tokens: dict[str, str] = answer.json()
    return tokens


def _bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_password_change_ends_every_access_token_at_once(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    user = await add_user(pg, api_settings)
    phone, laptop = await _login(api, user), await _login(api, user)
    for tokens in (phone, laptop):
        assert (await api.get("/me", headers=_bearer(tokens))).status_code == 200

    changed = await api.patch(
        "/me",
        json={"password": "a brand new long password", "current_password": TEST_PASSWORD},
        headers=_bearer(phone),
    )
    assert changed.status_code == 200, changed.text

    # The instance that made the change refuses at once; no waiting here.
    for tokens in (phone, laptop):
        _is_problem(await api.get("/me", headers=_bearer(tokens)), 401)
        refreshed = await api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401
    fresh = await api.post(
        "/auth/login", json={"email": user.email, "password": "a brand new long password"}
    )
    assert (await api.get("/me", headers=_bearer(fresh.json()))).status_code == 200


async def test_logout_everywhere_ends_access_and_refresh_tokens(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    user = await add_user(pg, api_settings)
    phone, laptop = await _login(api, user), await _login(api, user)
    assert (await api.get("/me", headers=_bearer(laptop))).status_code == 200

    answer = await api.post("/auth/logout-everywhere", headers=_bearer(phone))
    assert answer.status_code == 204, answer.text

    for tokens in (phone, laptop):
        _is_problem(await api.get("/me", headers=_bearer(tokens)), 401)
        refreshed = await api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401
    # Logging in again works, and the new token stands.
    assert (await api.get("/me", headers=_bearer(await _login(api, user)))).status_code == 200


async def test_refresh_hands_out_the_roles_the_account_has_now(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    user = await add_user(pg, api_settings, Role.DRIVER, Role.ADMIN)
    tokens = await _login(api, user)
    await pg.execute("DELETE FROM user_roles WHERE user_id = $1 AND role = 'admin'", user.id)
    renewed = await api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200
    forbidden = await api.get("/admin/chargers", headers=_bearer(renewed.json()))
    _is_problem(forbidden, 403)
    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user.id)
    again = await api.post("/auth/refresh", json={"refresh_token": renewed.json()["refresh_token"]})
    assert again.status_code == 401


async def _live_charger(pg: PgConnection, settings: Settings) -> tuple[ApiUser, str]:
    host = await add_user(pg, settings, Role.HOST)
    charger = await add_charger(pg, host)
    return host, charger.id


def _token(user: ApiUser) -> str:
    return user.headers["Authorization"].removeprefix("Bearer ")


async def test_an_open_live_stream_closes_4401_when_its_account_is_disabled(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    host, charger_id = await _live_charger(pg, api_settings)
    ws_base = str(api.base_url).replace("http://", "ws://").rstrip("/")
    url = f"{ws_base}/ws/chargers/{charger_id}?access_token={_token(host)}"
    async with websockets.connect(url) as ws:
        assert '"snapshot"' in str(await ws.recv())
        await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", host.id)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(PROPAGATION_DEADLINE_S):
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    # A new connection with the same token is refused outright.
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as refused:
            await ws.recv()
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 4401


async def test_changes_still_apply_after_the_notification_listener_reconnects(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    user = await add_user(pg, api_settings)
    assert (await api.get("/me", headers=user.headers)).status_code == 200
    listener = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'chargemitra-principal-listener'"
    )
    old = {r["pid"] for r in await pg.fetch(listener)}
    assert len(old) == 1
    await pg.execute(f"SELECT pg_terminate_backend(pid) FROM ({listener}) AS l")
    async with asyncio.timeout(PROPAGATION_DEADLINE_S):
        while not ({r["pid"] for r in await pg.fetch(listener)} - old):
            # Meanwhile the API answers from the database (or its fresh cache).
            assert (await api.get("/me", headers=user.headers)).status_code == 200
            await asyncio.sleep(0.05)
    assert (await api.get("/me", headers=user.headers)).status_code == 200
    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user.id)
    _is_problem(await _refused_soon(lambda: api.get("/me", headers=user.headers)), 401)


async def test_listing_routes_refuse_a_disabled_callers_token(
    api: httpx.AsyncClient, api_settings: Settings, pg: PgConnection
) -> None:
    """The listing routes check an optional token like every other route: a disabled host
    is refused (401) the QR code of its unlisted charger, which only its owner may see,
    instead of being served it until the token expires."""
    host = await add_user(pg, api_settings, Role.HOST)
    charger = await add_charger(pg, host, is_listed=False)
    path = f"/chargers/{charger.id}/qr.svg"
    assert (await api.get(path, headers=host.headers)).status_code == 200
    assert (await api.get(path)).status_code == 404  # not visible to anyone else

    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", host.id)

    _is_problem(await _refused_soon(partial(api.get, path, headers=host.headers)), 401)
