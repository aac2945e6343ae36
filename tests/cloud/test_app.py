"""The API skeleton: lifespan opens real services, health/readiness/metrics, problem answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from cloud.app import create_app
from cloud.errors import NotFound, RateLimited
from cloud.problems import MEDIA_TYPE, install_problem_handlers
from cloud.telemetry.storage import TelemetryBackend
from tests.support.cloud_env import make_settings
from tests.support.mosquitto import Broker
from tests.support.sim_device import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield app, client


async def _ready_status(client: httpx.AsyncClient, wanted: int) -> httpx.Response:
    """Poll /readyz until it answers ``wanted`` (the broker link connects in the background)."""
    async with asyncio.timeout(20):
        while (response := await client.get("/readyz")).status_code != wanted:  # noqa: ASYNC110 -- polling an HTTP answer
            await asyncio.sleep(0.05)
    return response


async def test_health_and_readiness_with_every_dependency_up(
    api: tuple[FastAPI, httpx.AsyncClient], telemetry_backend: TelemetryBackend
) -> None:
    _, client = api
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = await _ready_status(client, 200)
    body = ready.json()
    assert body["checks"] == {"database": "ok", "redis": "ok", "broker": "ok"}
    assert body["telemetry_backend"] == telemetry_backend.value


async def test_readiness_reports_the_broker_down_as_a_problem(
    api: tuple[FastAPI, httpx.AsyncClient], broker: Broker
) -> None:
    app, client = api
    await wait_for(lambda: app.state.cloud.broker.connected, timeout_s=20)
    broker.stop()
    ready = await _ready_status(client, 503)
    assert ready.headers["content-type"] == MEDIA_TYPE
    problem = ready.json()
    assert problem["status"] == 503
    assert problem["dependency"] == "broker"


async def test_metrics_count_requests_by_route(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    await client.get("/healthz")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'chargemitra_http_requests_total{method="GET",route="/healthz",status="200"}' in (
        metrics.text
    )


def _problem_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("charger", "C42")

    @app.get("/limited")
    async def limited() -> None:
        raise RateLimited("slow down", retry_after_s=30)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/typed/{n}")
    async def typed(n: int) -> int:
        return n

    return app


@pytest.mark.parametrize(
    ("path", "status", "slug"),
    [
        ("/missing", 404, "not-found"),
        ("/limited", 429, "rate-limited"),
        ("/boom", 500, "internal"),
        ("/typed/abc", 422, "invalid-request"),
    ],
)
async def test_errors_become_rfc9457_problems(path: str, status: int, slug: str) -> None:
    transport = httpx.ASGITransport(app=_problem_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + slug)
    assert "secret internals" not in response.text
    if path == "/missing":
        assert (body["entity"], body["key"]) == ("charger", "C42")
    if path == "/limited":
        assert response.headers["retry-after"] == "30"
