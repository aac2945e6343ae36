"""Rate limits key on the real client (issue 13, item 7).

The per-address limits (login, registration, pairing-code claim) key on the address uvicorn
reports. uvicorn's default believes ``X-Forwarded-For`` from any loopback peer, so a client
on the same host (or behind a local proxy that passes the header through) could name a new
address on every attempt and never be limited. These tests run the real
``chargemitra-cloud serve`` process and talk to it over a real socket, as that client.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cloud.settings import Settings
from tests.support.api_process import clear_rate_limits
from tests.support.bookings_fixtures import serve_api
from tests.support.cloud_env import make_settings
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration

LIMIT = 3
#: Small limits, so a test needs few attempts (each login or registration hashes a password).
LIMITS = {
    "CHARGEMITRA_AUTH_LOGIN_ATTEMPTS_PER_WINDOW": str(LIMIT),
    "CHARGEMITRA_PROVISIONING_CLAIM_ATTEMPTS_PER_WINDOW": str(LIMIT),
}


@pytest.fixture
async def api_settings(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> Settings:
    await clear_rate_limits()
    return make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")


def _spoofed(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{i + 1}"}


async def _attempts(client: httpx.AsyncClient, route: str, n: int) -> list[int]:
    """``n`` attempts on ``route``, each naming another client in ``X-Forwarded-For``."""
    codes = []
    for i in range(n):
        if route == "/auth/login":
            body = {"email": f"nobody{i}@example.in", "password": "not the password"}
        elif route == "/auth/register":
            body = {"email": f"new{i}@example.in", "password": "a long password", "name": "N"}
        else:
            # Well-formed (a malformed code is a 422 before any limit is counted).
            body = {"code": f"ZZZZZ-{i:05d}"}
        answer = await client.post(route, json=body, headers=_spoofed(i))
        codes.append(answer.status_code)
    return codes


@pytest.mark.parametrize(
    ("route", "refused"),
    [("/auth/login", 401), ("/auth/register", 201), ("/devices/claim", 400)],
)
async def test_a_rotated_forwarded_for_does_not_reset_the_per_address_limit(
    api_settings: Settings, tmp_path: Path, route: str, refused: int
) -> None:
    async with (
        serve_api(api_settings, tmp_path / "api.log", **LIMITS) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        codes = await _attempts(client, route, LIMIT + 2)
    assert codes == [refused] * LIMIT + [429, 429]


async def test_a_configured_proxy_is_believed(api_settings: Settings, tmp_path: Path) -> None:
    """Behind a proxy named in APP_FORWARDED_ALLOW_IPS, each client it forwards for has its
    own budget, and one client cannot escape its limit by connecting through the proxy."""
    env = LIMITS | {"CHARGEMITRA_APP_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    async with (
        serve_api(api_settings, tmp_path / "api.log", **env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        # LIMIT + 2 different clients: nobody is over the limit.
        assert await _attempts(client, "/auth/login", LIMIT + 2) == [401] * (LIMIT + 2)
        # One client, again and again: limited, whatever port or connection it uses.
        codes = []
        for i in range(LIMIT + 1):
            answer = await client.post(
                "/auth/login",
                json={"email": f"other{i}@example.in", "password": "not the password"},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            codes.append(answer.status_code)
    assert codes == [401] * LIMIT + [429]
