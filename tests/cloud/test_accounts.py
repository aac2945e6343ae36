"""Accounts over HTTP: register, login, rotating refresh tokens, logout, phone one-time codes,
the profile, rate limits, and the tokens the API must refuse."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from jwt.warnings import InsecureKeyLengthWarning
from redis.asyncio import Redis

from cloud.accounts import passwords, service
from cloud.accounts.models import Role
from cloud.accounts.sms import RedisSmsOutbox
from cloud.accounts.tokens import AUDIENCE, ISSUER, issue_access_token
from cloud.pg import PgConnection
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL
from tests.support.market import TEST_PASSWORD, Api, add_user

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """Redis with this module's keys (rate limits, codes, the SMS outbox) cleared."""
    client = Redis.from_url(REDIS_URL)
    for pattern in (
        REDIS_KEY_PREFIX + "rl:*",
        REDIS_KEY_PREFIX + "otp:*",
        REDIS_KEY_PREFIX + "sms:*",
    ):
        keys = [key async for key in client.scan_iter(match=pattern)]
        if keys:
            await client.delete(*keys)
    yield client
    await client.aclose()


@pytest.fixture
async def api(market_api: Api, redis: Redis) -> Api:
    return market_api


def client_at(api: Api, address: str) -> httpx.AsyncClient:
    """A client of the same app calling from ``address`` (rate limits are per address)."""
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


async def register(api: Api, **body: Any) -> httpx.Response:
    body = {"email": "asha@example.in", "password": PASSWORD, "name": "Asha Rao"} | body
    return await api.client.post("/auth/register", json=body)


async def login(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/auth/login", json={"password": PASSWORD} | body)


def auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


# --- registration ---------------------------------------------------------------------


async def test_register_creates_a_driver_and_logs_it_in(api: Api) -> None:
    answer = await register(api, phone="098123 45678")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["user"]["roles"] == ["driver"]
    assert body["user"]["phone"] == "+919812345678"
    assert body["user"]["phone_verified"] is False
    assert body["user"]["host"] is None
    me = await api.client.get("/me", headers=auth(body["tokens"]))
    assert me.status_code == 200
    assert me.json()["email"] == "asha@example.in"


async def test_register_as_host_creates_the_host_profile(api: Api, pg: PgConnection) -> None:
    body = (await register(api, email="Host@Example.IN", host=True)).json()
    assert sorted(body["user"]["roles"]) == ["driver", "host"]
    assert body["user"]["email"] == "host@example.in"
    assert body["user"]["host"]["kyc_status"] == "not_started"
    assert await pg.fetchval("SELECT count(*) FROM hosts") == 1


async def test_register_refuses_a_taken_email_or_phone(api: Api) -> None:
    assert (await register(api, phone="9812345678")).status_code == 201
    again = await register(api, email="ASHA@example.in")
    assert again.status_code == 409
    same_phone = await register(api, email="other@example.in", phone="+91 98123 45678")
    assert same_phone.status_code == 409
    assert "phone" in same_phone.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "short"),  # below MIN_PASSWORD_LENGTH (10)
        ("password", "x" * 129),
        ("email", "not-an-email"),
        ("name", "   "),
        ("phone", "12345"),
        ("phone", "+1 415 555 0100"),
    ],
)
async def test_register_validates_fields(api: Api, field: str, value: str) -> None:
    answer = await register(api, **{field: value})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"].endswith(field)


async def test_unknown_fields_are_refused(api: Api) -> None:
    answer = await register(api, is_admin=True)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "body.is_admin"
    assert (await login(api.client, email="a@b.in", remember=True)).status_code == 422


# --- login, no enumeration --------------------------------------------------------------


async def test_login_by_email_or_phone(api: Api) -> None:
    await register(api, phone="9812345678")
    by_email = await login(api.client, email="asha@example.in")
    by_phone = await login(api.client, phone="+91-98123-45678")
    for answer in (by_email, by_phone):
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == api.settings.auth.access_ttl_s
        assert (await api.client.get("/me", headers=auth(tokens))).status_code == 200
    assert (await login(api.client, email="a@b.in", phone="9812345678")).status_code == 422


async def test_unknown_user_and_wrong_password_answer_alike(
    api: Api, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(api)
    await pg.execute("INSERT INTO users (id, email, name) VALUES ('U-OTP', 'otp@example.in', 'X')")
    disabled = await add_user(pg, api.settings, email="gone@example.in")
    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", disabled.id)
    verifications: list[str | None] = []
    real_verify = passwords.verify_password

    def counting_verify(password_hash: str | None, password: str) -> bool:
        verifications.append(password_hash)
        return real_verify(password_hash, password)

    # Not a timing assertion: each path must pay for exactly one argon2 verification.
    monkeypatch.setattr(service, "verify_password", counting_verify)
    answers = [
        await login(api.client, email="asha@example.in", password="wrong password!"),
        await login(api.client, email="nobody@example.in"),
        await login(api.client, email="otp@example.in"),  # an account without a password
        await login(api.client, email="gone@example.in", password=TEST_PASSWORD),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({a.text for a in answers}) == 1
    assert len(verifications) == len(answers)


async def test_login_rehashes_a_weaker_hash(api: Api, pg: PgConnection) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    await pg.execute(
        "INSERT INTO users (id, email, name, password_hash) VALUES ('U1', 'w@example.in', 'W', $1)",
        weak,
    )
    assert (await login(api.client, email="w@example.in")).status_code == 200
    stored = await pg.fetchval("SELECT password_hash FROM users WHERE id = 'U1'")
    assert stored != weak
    assert "m=65536" in stored


# --- refresh tokens ---------------------------------------------------------------------


async def test_refresh_rotates_within_the_family(api: Api, pg: PgConnection) -> None:
    first = (await register(api)).json()["tokens"]
    second = await api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    tokens = second.json()
    assert tokens["refresh_token"] != first["refresh_token"]
    assert (await api.client.get("/me", headers=auth(tokens))).status_code == 200
    rows = await pg.fetch(
        "SELECT family_id, rotated_at IS NOT NULL AS rotated, revoked_at FROM refresh_tokens "
        "ORDER BY created_at, id"
    )
    assert len(rows) == 2
    assert rows[0]["family_id"] == rows[1]["family_id"]
    assert sorted(r["rotated"] for r in rows) == [False, True]
    assert all(r["revoked_at"] is None for r in rows)


async def test_reusing_a_rotated_token_revokes_the_whole_family(api: Api, pg: PgConnection) -> None:
    old = (await register(api)).json()["tokens"]["refresh_token"]
    other_login = (await login(api.client, email="asha@example.in")).json()["refresh_token"]
    new = (await api.client.post("/auth/refresh", json={"refresh_token": old})).json()
    replay = await api.client.post("/auth/refresh", json={"refresh_token": old})
    assert replay.status_code == 401
    assert replay.headers["www-authenticate"].startswith("Bearer")
    # The legitimate holder of the newest token is logged out too: we cannot tell who is who.
    after = await api.client.post("/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert after.status_code == 401
    assert await pg.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 1
    # Another login (another family, another device) is untouched.
    other = await api.client.post("/auth/refresh", json={"refresh_token": other_login})
    assert other.status_code == 200


async def test_expired_and_unknown_refresh_tokens_are_refused(api: Api, pg: PgConnection) -> None:
    token = (await register(api)).json()["tokens"]["refresh_token"]
    await pg.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    for presented in (token, "made-up-token"):
        answer = await api.client.post("/auth/refresh", json={"refresh_token": presented})
        assert answer.status_code == 401


async def test_refresh_of_a_disabled_account_is_refused(api: Api, pg: PgConnection) -> None:
    token = (await register(api)).json()["tokens"]["refresh_token"]
    await pg.execute("UPDATE users SET disabled_at = now()")
    answer = await api.client.post("/auth/refresh", json={"refresh_token": token})
    assert answer.status_code == 401
    assert await pg.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0


async def test_logout_revokes_the_family_and_is_idempotent(api: Api) -> None:
    first = (await register(api)).json()["tokens"]["refresh_token"]
    rotated = (await api.client.post("/auth/refresh", json={"refresh_token": first})).json()
    for _ in range(2):
        answer = await api.client.post("/auth/logout", json={"refresh_token": first})
        assert answer.status_code == 204
    refused = await api.client.post(
        "/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert refused.status_code == 401
    assert (await api.client.post("/auth/logout", json={"refresh_token": "x"})).status_code == 204


# --- access tokens the API must refuse ----------------------------------------------------


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": "access",
        "sub": user_id,
        "roles": ["admin"],
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "J1",
    }
    return claims | changes


def _unsigned(claims: dict[str, Any]) -> str:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_bad_access_tokens_are_refused(api: Api) -> None:
    user = (await register(api)).json()
    user_id = user["user"]["id"]
    secret = api.settings.app.secret_key.get_secret_value()
    expired = issue_access_token(
        secret,
        user_id=user_id,
        roles={Role.DRIVER},
        now=datetime.now(UTC) - timedelta(hours=1),
        ttl_s=60,
    )
    with warnings.catch_warnings():
        # PyJWT warns that our 32-byte test secret is short for HS384/HS512: so it is.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        other_algs = {
            alg: jwt.encode(_claims(user_id), secret, algorithm=alg) for alg in ("HS384", "HS512")
        }
    tokens = other_algs | {
        "expired": expired,
        "alg none": _unsigned(_claims(user_id)),
        "other key": jwt.encode(_claims(user_id), "x" * 32, algorithm="HS256"),
        "refresh token as bearer": user["tokens"]["refresh_token"],
        "not an access token": jwt.encode(_claims(user_id, typ="refresh"), secret, "HS256"),
        "other audience": jwt.encode(_claims(user_id, aud="elsewhere"), secret, "HS256"),
        "garbage": "not.a.jwt",
    }
    for name, token in tokens.items():
        answer = await api.client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, name
    assert (await api.client.get("/me")).status_code == 401
    basic = await api.client.get("/me", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401


async def test_a_deleted_or_disabled_account_cannot_use_its_access_token(
    api: Api, pg: PgConnection
) -> None:
    user = await add_user(pg, api.settings)
    await pg.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user.id)
    assert (await api.client.get("/me", headers=user.headers)).status_code == 401


# --- phone one-time codes -------------------------------------------------------------------


async def _last_code(redis: Redis, phone: str) -> str:
    sent = await RedisSmsOutbox(redis, REDIS_KEY_PREFIX).messages(phone)
    assert sent, f"no SMS to {phone}"
    return sent[0].text[:6]


async def test_otp_logs_in_the_owner_and_verifies_the_phone(api: Api, redis: Redis) -> None:
    registered = (await register(api, phone="9812345678")).json()
    asked = await api.client.post("/auth/otp/request", json={"phone": "98123 45678"})
    assert asked.status_code == 202
    assert asked.json() == {"phone": "+919812345678", "expires_in": api.settings.auth.otp_ttl_s}
    sent = await RedisSmsOutbox(redis, REDIS_KEY_PREFIX).messages("+919812345678")
    assert len(sent) == 1
    assert sent[0].text[:6].isdigit()
    assert len(sent[0].text) <= 160
    # The registrant verifies their own number (their bearer token comes along).
    verified = await api.client.post(
        "/auth/otp/verify",
        json={"phone": "+919812345678", "code": sent[0].text[:6]},
        headers=auth(registered["tokens"]),
    )
    assert verified.status_code == 200, verified.text
    me = (await api.client.get("/me", headers=auth(verified.json()))).json()
    assert me["id"] == registered["user"]["id"]
    assert me["phone_verified"] is True
    # Single use.
    again = await api.client.post(
        "/auth/otp/verify", json={"phone": "+919812345678", "code": sent[0].text[:6]}
    )
    assert again.status_code == 401
    # Now verified, a code alone logs the owner in.
    await api.client.post("/auth/otp/request", json={"phone": "9812345678"})
    code = await _last_code(redis, "+919812345678")
    alone = await api.client.post("/auth/otp/verify", json={"phone": "9812345678", "code": code})
    me_again = (await api.client.get("/me", headers=auth(alone.json()))).json()
    assert me_again["id"] == registered["user"]["id"]


async def test_otp_wrong_guesses_burn_the_code(api: Api, redis: Redis) -> None:
    await api.client.post("/auth/otp/request", json={"phone": "9812345678"})
    code = await _last_code(redis, "+919812345678")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(api.settings.auth.otp_max_attempts):
        answer = await api.client.post(
            "/auth/otp/verify", json={"phone": "9812345678", "code": wrong}
        )
        assert answer.status_code == 401
    late = await api.client.post("/auth/otp/verify", json={"phone": "9812345678", "code": code})
    assert late.status_code == 401


async def test_otp_signs_up_an_unknown_number(api: Api, redis: Redis) -> None:
    asked = await api.client.post("/auth/otp/request", json={"phone": "7012345678"})
    # The same answer as for a number with an account: nothing to enumerate.
    assert asked.status_code == 202
    code = await _last_code(redis, "+917012345678")
    answer = await api.client.post(
        "/auth/otp/verify", json={"phone": "7012345678", "code": code, "name": "Ravi"}
    )
    assert answer.status_code == 200
    me = (await api.client.get("/me", headers=auth(answer.json()))).json()
    assert (me["name"], me["phone"], me["phone_verified"], me["roles"]) == (
        "Ravi",
        "+917012345678",
        True,
        ["driver"],
    )


async def test_a_number_someone_else_typed_goes_to_its_proven_owner(
    api: Api, redis: Redis, pg: PgConnection
) -> None:
    squatter = (await register(api, phone="9812345678")).json()
    await api.client.post("/auth/otp/request", json={"phone": "9812345678"})
    code = await _last_code(redis, "+919812345678")
    owner = await api.client.post("/auth/otp/verify", json={"phone": "9812345678", "code": code})
    assert owner.status_code == 200
    me = (await api.client.get("/me", headers=auth(owner.json()))).json()
    assert me["id"] != squatter["user"]["id"]
    assert me["phone_verified"] is True
    assert (
        await pg.fetchval("SELECT phone FROM users WHERE id = $1", squatter["user"]["id"])
    ) is None


async def test_otp_request_checks_the_number(api: Api) -> None:
    for phone in ("5812345678", "+4915112345678", "98123"):
        answer = await api.client.post("/auth/otp/request", json={"phone": phone})
        assert answer.status_code == 422, phone


# --- rate limits --------------------------------------------------------------------------


async def test_login_is_rate_limited_per_identity_and_per_address(api: Api) -> None:
    limit = api.settings.auth.login_attempts_per_window
    await register(api)
    # Per identity: attempts from many addresses on one account.
    answers = []
    for i in range(limit + 1):
        async with client_at(api, f"10.0.0.{i + 1}") as client:
            answers.append(await login(client, email="asha@example.in", password="wrong guess!"))
    assert [a.status_code for a in answers] == [401] * limit + [429]
    assert int(answers[-1].headers["retry-after"]) > 0
    assert answers[-1].json()["type"].endswith("/rate-limited")
    # Even the right password is refused while the limit holds.
    async with client_at(api, "10.0.1.1") as client:
        assert (await login(client, email="asha@example.in")).status_code == 429
    # Per address: one address trying many accounts.
    async with client_at(api, "10.0.2.1") as client:
        codes = [
            (await login(client, email=f"user{i}@example.in")).status_code for i in range(limit + 1)
        ]
    assert codes == [401] * limit + [429]


async def test_otp_requests_are_rate_limited(api: Api) -> None:
    limit = api.settings.auth.login_attempts_per_window
    codes = [
        (await api.client.post("/auth/otp/request", json={"phone": "9812345678"})).status_code
        for _ in range(limit + 1)
    ]
    assert codes == [202] * limit + [429]


async def test_otp_verification_is_rate_limited(api: Api) -> None:
    limit = api.settings.auth.login_attempts_per_window
    codes = []
    for i in range(limit + 1):
        async with client_at(api, f"10.1.0.{i + 1}") as client:
            answer = await client.post(
                "/auth/otp/verify", json={"phone": "9812345678", "code": "000000"}
            )
            codes.append(answer.status_code)
    assert codes == [401] * limit + [429]


# --- the profile -------------------------------------------------------------------------


async def test_patch_me_changes_name_locale_and_phone(api: Api) -> None:
    tokens = (await register(api, phone="9812345678")).json()["tokens"]
    answer = await api.client.patch(
        "/me",
        json={"name": "Asha R.", "locale": "hi-IN", "phone": "8812345678"},
        headers=auth(tokens),
    )
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert (me["name"], me["locale"], me["phone"], me["phone_verified"]) == (
        "Asha R.",
        "hi-IN",
        "+918812345678",
        False,
    )
    bad = await api.client.patch("/me", json={"email": "x@y.in"}, headers=auth(tokens))
    assert bad.status_code == 422


async def test_patch_me_refuses_a_taken_phone(api: Api, pg: PgConnection) -> None:
    await add_user(pg, api.settings, phone="+918812345678")
    tokens = (await register(api)).json()["tokens"]
    answer = await api.client.patch("/me", json={"phone": "8812345678"}, headers=auth(tokens))
    assert answer.status_code == 409


async def test_password_change_needs_the_current_one_and_ends_other_sessions(api: Api) -> None:
    tokens = (await register(api)).json()["tokens"]
    new = "another long password"
    missing = await api.client.patch("/me", json={"password": new}, headers=auth(tokens))
    assert missing.status_code == 422
    wrong = await api.client.patch(
        "/me", json={"password": new, "current_password": "not it at all"}, headers=auth(tokens)
    )
    assert wrong.status_code == 403
    changed = await api.client.patch(
        "/me", json={"password": new, "current_password": PASSWORD}, headers=auth(tokens)
    )
    assert changed.status_code == 200
    stale = await api.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert stale.status_code == 401
    assert (await login(api.client, email="asha@example.in")).status_code == 401
    assert (await login(api.client, email="asha@example.in", password=new)).status_code == 200


# --- demo accounts -----------------------------------------------------------------------


def test_seed_demo_runs_in_development_only(db_url: str) -> None:
    from tests.cloud.test_cli import _run

    staging = {
        "CHARGEMITRA_DB_URL": db_url,
        "CHARGEMITRA_APP_ENV": "staging",
        "CHARGEMITRA_APP_SECRET_KEY": "a-real-secret-for-this-test",
        "CHARGEMITRA_MQTT_PASSWORD": "a-real-broker-password",
        "CHARGEMITRA_PAYMENTS_UPI_VPA": "chargemitra.staging@okaxis",
    }
    refused = _run(staging, "seed-demo")
    assert refused.returncode == 1
    assert "CHARGEMITRA_APP_ENV=development" in refused.stderr
    seeded = _run(
        {"CHARGEMITRA_DB_URL": db_url, "CHARGEMITRA_APP_ENV": "development"},
        "seed-demo",
        "--password",
        "demo password 1",
    )
    assert seeded.returncode == 0, seeded.stderr
    assert "admin@demo.chargemitra.in" in seeded.stdout
    assert "demo password 1" in seeded.stdout


async def test_seed_demo_with_a_device_lists_the_demo_site(
    db_url: str, pg: PgConnection, tmp_path: Path
) -> None:
    from tests.cloud.test_cli import _run

    secret = tmp_path / "pin.secret"
    secret.write_bytes(b"s" * 32)
    env = {"CHARGEMITRA_DB_URL": db_url, "CHARGEMITRA_APP_ENV": "development"}
    args = ("seed-demo", "--password", "demo password 1", "--device", "demo-site-9")
    half = _run(env, *args)
    assert half.returncode == 2
    assert "--pin-secret-file" in half.stderr
    for _ in range(2):  # idempotent: a second run changes nothing but the secret
        seeded = _run(env, *args, "--pin-secret-file", str(secret))
        assert seeded.returncode == 0, seeded.stderr
    rows = await pg.fetch(
        "SELECT c.moderation_status, c.is_listed, d.pin_secret, u.email "
        "FROM chargers c JOIN devices d ON d.id = c.device_id "
        "JOIN hosts h ON h.id = c.host_id JOIN users u ON u.id = h.user_id "
        "WHERE c.device_id = 'demo-site-9'"
    )
    assert [
        (r["moderation_status"], r["is_listed"], r["pin_secret"], r["email"]) for r in rows
    ] == [("approved", True, b"s" * 32, "host@demo.chargemitra.in")]
    assert await pg.fetchval("SELECT count(*) FROM availability_windows") == 7
