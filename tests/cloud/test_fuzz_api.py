"""schemathesis against the API's own OpenAPI document, with every check (issue 17).

``schemathesis run --checks all --mode all`` — positive and negative data; the examples,
coverage, fuzzing and stateful (links) phases; status-code, content-type, header, schema,
auth and Allow conformance; no 5xx — against ``chargemitra-cloud serve`` on the real
PostgreSQL, Redis and Mosquitto, as each of anonymous, driver, host and admin (one test
each), with a fixed seed. Each role logs in through ``POST /auth/login`` (and again after a
401: a fuzzed ``logout-everywhere`` revokes the token). Each must reach
``MIN_CASES_PER_ROLE`` cases with no failure; the accepted exceptions, with their reasons,
are in ``schemathesis.toml`` beside this file and nowhere else. Real rows (an approved
charger, its device and connector, a booking) give the links and lookups something to find.

The last two tests check, statically and live, that every JSON body refuses unknown fields.
WebSocket routes are not in the OpenAPI document; ``test_bola.py`` covers who may open them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from py_vapid import Vapid
from redis.asyncio import Redis

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.ids import new_ulid
from tests.support.api_process import clear_rate_limits
from tests.support.bookings_fixtures import serve_api
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL, make_settings
from tests.support.market import TEST_PASSWORD, ApiUser, add_user
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The acceptance floor (issue 17): generated cases per role.
MIN_CASES_PER_ROLE = 1000
#: Per operation and phase.
MAX_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class FuzzWorld:
    settings: Settings
    admin: ApiUser
    host: ApiUser
    driver: ApiUser
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
    for pattern in (
        REDIS_KEY_PREFIX + "rl:*",
        REDIS_KEY_PREFIX + "otp:*",
        REDIS_KEY_PREFIX + "sms:*",
    ):
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
    return FuzzWorld(settings, admin, host, driver, ids)


ROLES = ("anonymous", "driver", "host", "admin")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _run_schemathesis(base_url: str, role: str, user: ApiUser | None, out: Path) -> dict[str, Any]:
    config = CONFIG.read_text()
    if user is not None:
        config += (
            "\n[auth.dynamic.openapi.HTTPBearer]\n"
            'path = "/auth/login"\n'
            f"payload = {{ email = {json.dumps(user.email)}, "
            f"password = {json.dumps(TEST_PASSWORD)} }}\n"
            'extract_selector = "/access_token"\n'
        )
    config_file = out / f"schemathesis-{role}.toml"
    config_file.write_text(config)
    report = out / f"report-{role}.json"
    cli = Path(sys.executable).with_name("schemathesis")
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(config_file),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=out,
    )
    (out / f"output-{role}.txt").write_text(proc.stdout + proc.stderr)
    print(f"schemathesis as {role}: exit {proc.returncode}, {time.monotonic() - started:.1f} s")
    return {
        "rc": proc.returncode,
        "output": proc.stdout + proc.stderr,
        "report": json.loads(report.read_text()),
    }


def _vapid_key(directory: Path) -> Path:
    path = directory / "vapid.pem"
    vapid = Vapid()
    vapid.generate_keys()
    vapid.save_key(str(path))
    return path


#: One test per role: each has its own API process and its own time limit, and a failure
#: names its role. Run one after the other, the four take about as long as one test did.
@pytest.mark.parametrize("role", ROLES)
async def test_schemathesis_all_checks(world: FuzzWorld, tmp_path: Path, role: str) -> None:
    users = {"anonymous": None, "driver": world.driver, "host": world.host, "admin": world.admin}
    env = {
        "CHARGEMITRA_AUTH_LOGIN_ATTEMPTS_PER_WINDOW": "100000",
        "CHARGEMITRA_PROVISIONING_CLAIM_ATTEMPTS_PER_WINDOW": "100000",
        "CHARGEMITRA_MARKETPLACE_UNLOCK_WAIT_S": "0.2",
        # Web Push configured, so its routes answer beyond "not configured" (503).
        "CHARGEMITRA_NOTIFICATIONS_VAPID_PRIVATE_KEY_FILE": str(_vapid_key(tmp_path)),
    }
    out = tmp_path  # the report, the output and the role's configuration stay here
    try:
        async with serve_api(world.settings, tmp_path / "api.log", **env) as base_url:
            result = await asyncio.to_thread(_run_schemathesis, base_url, role, users[role], out)
    finally:
        # Thousands of logins from 127.0.0.1: later tests start below the limits again.
        await clear_rate_limits()
    problems = []
    report = result["report"]
    cases = report["test_cases"]["generated"]
    print(f"schemathesis as {role}: {cases} cases, {report['running_time']:.1f} s")
    for failure in report["failures"]:
        problems.append(f"{role}: {failure['code']} {failure['title']}: {failure['operations']}")
    for phase, outcome in report["phases"].items():
        if outcome["status"] not in ("success", "failure"):
            problems.append(f"{role}: phase {phase} {outcome}")
    if cases < MIN_CASES_PER_ROLE:
        problems.append(f"{role}: only {cases} cases")
    if result["rc"] != 0 and not report["failures"]:
        problems.append(f"{role}: exit {result['rc']}: {result['output'][-2000:]}")
    assert not problems, "\n".join(problems) + f"\n(full output in {out})"


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
