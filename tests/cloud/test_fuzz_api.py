"""schemathesis against the API's own OpenAPI document: no 5xx, answers as documented,
unknown request fields refused.

Every operation in ``/openapi.json`` gets positive and negative generated cases (at least
``MIN_TOTAL_CASES`` in all), sent with an admin's bearer token so role checks do not stop the
request at the door, and with the ids of real rows for half of the cases so handlers run past
their lookups. The app runs in schemathesis' ASGI client (its own event loop thread, lifespan
included) against the real PostgreSQL, Redis and Mosquitto.

WebSocket routes are not in the OpenAPI document; ``test_bola.py`` covers who may open them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from redis.asyncio import Redis
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.ids import new_ulid
from tests.cloud.conftest import REDIS_URL, make_settings
from tests.cloud.market import ApiUser, add_user
from tests.cloud.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The acceptance floor (issue 7): generated cases across all operations.
MIN_TOTAL_CASES = 1000
#: Per operation and generation mode; with ~20+ operations and 2 modes this clears the floor.
CASES_PER_MODE = 30
CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection]


@dataclass(frozen=True, slots=True)
class FuzzWorld:
    settings: Settings
    admin: ApiUser
    #: Real ids for path parameters, by parameter name.
    ids: dict[str, str]


@pytest.fixture
async def world(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> FuzzWorld:
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        # An unlock of the fuzzed charger must not wait 8 s for an agent that is not there.
        CHARGEMITRA_MARKETPLACE_UNLOCK_WAIT_S="0.2",
    )
    redis = Redis.from_url(REDIS_URL)
    for pattern in ("cm:rl:*", "cm:otp:*", "cm:sms:*"):
        keys = [key async for key in redis.scan_iter(match=pattern)]
        if keys:
            await redis.delete(*keys)
    await redis.aclose()
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    admin = await add_user(pg, settings, Role.ADMIN)
    device_id = f"cm-{new_ulid().lower()}"
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device_id, host.host_id)
    charger_id = new_ulid()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code, moderation_status, is_listed) "
        "VALUES ($1, $2, $3, 'Gate 2', '12 MG Road', 'Pune', 'MH', '411001', 18.52, 73.85, "
        "1800, $4, 'approved', true)",
        charger_id,
        host.host_id,
        device_id,
        charger_id[-10:],
    )
    connector_id = new_ulid()
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
        "VALUES ($1, $2, 1, 'Type2', 7400)",
        connector_id,
        charger_id,
    )
    booking_id = new_ulid()
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status) "
        "VALUES ($1, $2, $3, $4, tstzrange(now() + interval '1 day', "
        "now() + interval '1 day 1 hour'), 'confirmed')",
        booking_id,
        driver.id,
        charger_id,
        connector_id,
    )
    ids = {
        "charger_id": charger_id,
        "device_id": device_id,
        "connector_id": connector_id,
        "booking_id": booking_id,
        "user_id": driver.id,
        "host_id": host.host_id or "",
        "code": charger_id[-10:],
    }
    return FuzzWorld(settings, admin, ids)


def _run_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    client: asgi.ASGIClient,
    headers: dict[str, str],
    ids: dict[str, str],
    count: Callable[[], None],
) -> None:
    names = {p.name for p in operation.path_parameters}
    known = {name: ids[name] for name in names if name in ids}
    strategy = operation.as_strategy(mode, headers=headers)
    if known and mode is GenerationMode.POSITIVE:
        strategy = st.one_of(
            strategy, operation.as_strategy(mode, headers=headers, path_parameters=known)
        )

    @given(case=strategy)
    @settings(
        max_examples=CASES_PER_MODE,
        deadline=None,
        database=None,
        # Same cases every run: the suite must not fail at random. Exploring further is a
        # matter of raising CASES_PER_MODE locally.
        derandomize=True,
        # No shrinking: a failure is reported with the case as generated, within the budget.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        count()
        try:
            response = case.call(session=client)
        except Exception as exc:
            # The ASGI client re-raises what the app raised after its 500: name the request.
            raise AssertionError(
                f"server error: {case.method} {case.formatted_path} query={case.query} "
                f"body={case.body!r}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # Negative mode: nothing in this operation can be made invalid (no body, and its
        # path parameters are free-form strings). Positive mode still covered it.
        if mode is GenerationMode.POSITIVE:
            raise


def test_generated_requests_never_get_a_server_error(world: FuzzWorld) -> None:
    app = create_app(world.settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = world.admin.headers
    total = 0
    failures: list[str] = []

    def count() -> None:
        nonlocal total
        total += 1

    try:
        with asgi.get_client(app) as client:  # type: ignore[arg-type] # FastAPI's __call__ types its scope as MutableMapping
            for result in schema.get_all_operations():
                assert isinstance(result, Ok), result
                operation = result.ok()
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    try:
                        _run_operation(operation, mode, client, headers, world.ids, count)
                    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 -- reported below
                        failures.append(f"{operation.label} [{mode.value}]: {exc}")
    finally:
        # The ASGI client keeps the app's lifespan (engine, Redis, broker link) open until
        # told otherwise; close it before the fixtures tear the services down.
        asgi.shutdown_lifespans()
    print(f"schemathesis: {total} generated cases")
    assert not failures, "\n\n".join(failures)
    assert total >= MIN_TOTAL_CASES, total


def _body_schema(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    media = content.get("application/json")
    if media is None:
        return None
    schema: dict[str, Any] = media["schema"]
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def test_every_json_request_body_refuses_unknown_fields() -> None:
    """Statically, from the OpenAPI document: each JSON body object says
    ``additionalProperties: false`` (its model derives from ``cloud.schemas.RequestModel``)."""
    spec = create_app(Settings()).openapi()
    open_bodies = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            body = _body_schema(spec, operation)
            is_object = body is not None and body.get("type") == "object"
            if is_object and body is not None and body.get("additionalProperties") is not False:
                open_bodies.append(f"{method.upper()} {path}")
    assert not open_bodies, f"request bodies accepting unknown fields: {open_bodies}"


async def test_unknown_fields_are_refused_with_422(world: FuzzWorld) -> None:
    """Dynamically, for every operation with a JSON body: an unknown field is a 422."""
    import httpx

    app = create_app(world.settings)
    spec = app.openapi()
    accepted = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path, methods in spec["paths"].items():
                for method, operation in methods.items():
                    body = _body_schema(spec, operation)
                    if body is None or body.get("type") != "object":
                        continue
                    url = path.format(**{k: world.ids.get(k, "X") for k in _params(path)})
                    answer = await client.request(
                        method,
                        url,
                        content=json.dumps({"zz_not_a_field": 1}),
                        headers=world.admin.headers | {"Content-Type": "application/json"},
                    )
                    errors = answer.json().get("errors", []) if answer.status_code == 422 else []
                    if not any(e["field"] == "body.zz_not_a_field" for e in errors):
                        accepted.append(f"{method.upper()} {path}: {answer.status_code}")
    assert not accepted, f"unknown fields not refused: {accepted}"


def _params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
