"""No credential in logs (issue 13, item 8).

The real ``chargemitra-cloud serve`` process runs at INFO (its access log on); clients send
tokens every way they can reach a log line — a WebSocket's ``?access_token=`` query, HTTP
query parameters — and the test reads the process's own log output.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from cloud.settings import Settings
from tests.support.api_process import log_entries
from tests.support.bookings_fixtures import add_charger, serve_api
from tests.support.cloud_env import make_settings
from tests.support.market import add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


@pytest.fixture
def api_settings(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> Settings:
    return make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")


async def test_tokens_in_urls_never_reach_the_log(
    api_settings: Settings, pg: PgConnection, tmp_path: Path
) -> None:
    host = await add_user(pg, api_settings, Role.HOST)
    charger = await add_charger(pg, host)
    token = host.headers["Authorization"].removeprefix("Bearer ")
    refresh = secrets.token_urlsafe(32)
    log_file = tmp_path / "api.log"
    async with serve_api(api_settings, log_file, CHARGEMITRA_APP_LOG_LEVEL="INFO") as url:
        ws_url = url.replace("http://", "ws://") + f"/ws/chargers/{charger.id}"
        async with websockets.connect(f"{ws_url}?access_token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
        async with httpx.AsyncClient(base_url=url) as client:
            answer = await client.get(
                "/healthz", params={"refresh_token": refresh, "password": "hunter2hunter2"}
            )
            assert answer.status_code == 200
            await client.get("/me", headers=host.headers)
    text = log_file.read_text()
    entries = log_entries(log_file)
    assert not [e for e in entries if "raw" in e], text  # every line is ours, as JSON
    for secret in (token, token.split(".")[2], refresh, "hunter2hunter2"):
        assert secret not in text
    # The lines are there, redacted: the WebSocket's and the HTTP request's.
    messages = [str(e.get("msg")) for e in entries]
    assert any(f"/ws/chargers/{charger.id}?access_token=[REDACTED]" in m for m in messages), (
        messages
    )
    assert any("refresh_token=[REDACTED]&password=[REDACTED]" in m for m in messages), messages


async def test_a_websocket_authenticates_without_its_token_in_the_url(
    api_settings: Settings, pg: PgConnection, tmp_path: Path
) -> None:
    host = await add_user(pg, api_settings, Role.HOST)
    charger = await add_charger(pg, host)
    token = host.headers["Authorization"].removeprefix("Bearer ")
    log_file = tmp_path / "api.log"
    async with serve_api(api_settings, log_file, CHARGEMITRA_APP_LOG_LEVEL="INFO") as url:
        ws_url = url.replace("http://", "ws://") + f"/ws/chargers/{charger.id}"
        offered = [Subprotocol("chargemitra"), Subprotocol(f"bearer.{token}")]
        async with websockets.connect(ws_url, subprotocols=offered) as ws:
            # The server picks the plain protocol, never echoes the token.
            assert ws.subprotocol == "chargemitra"
            assert json.loads(await ws.recv())["type"] == "snapshot"
        # Without a token anywhere: refused.
        async with websockets.connect(ws_url, subprotocols=offered[:1]) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    assert token not in log_file.read_text()
