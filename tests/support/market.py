"""Shared pieces for the marketplace API tests: a running API, users with roles, auth headers.

Tests that need accounts create them straight in the database (``add_user``) and mint access
tokens with the API's own issuer (``bearer``), so a listing or booking test does not depend on
the login endpoints; the accounts tests cover those endpoints themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from cloud.accounts.models import Role
from cloud.accounts.passwords import hash_password
from cloud.accounts.tokens import issue_access_token
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.ids import new_ulid
from tests.support.cloud_env import make_settings
from tests.support.mosquitto import Broker

#: One password for every test user: hashing is slow on purpose, so it is hashed once.
TEST_PASSWORD = "correct horse battery staple"
_HASH: list[str] = []


def password_hash_for_tests() -> str:
    if not _HASH:
        _HASH.append(hash_password(TEST_PASSWORD))
    return _HASH[0]


@dataclass(frozen=True, slots=True)
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings


@pytest.fixture
async def market_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[Api]:
    """The API (as the ``cloud-api`` broker identity) and an in-process client for it.

    Registered for every cloud test by tests/cloud/conftest.py."""
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, settings)


@dataclass(frozen=True, slots=True)
class ApiUser:
    id: str
    email: str
    roles: frozenset[Role]
    host_id: str | None
    headers: dict[str, str]


async def add_user(
    pg: PgConnection,
    settings: Settings,
    *roles: Role,
    email: str | None = None,
    phone: str | None = None,
) -> ApiUser:
    """A user with ``roles`` (a host also gets its Host row) and a valid bearer header."""
    user_id = new_ulid()
    email = email or f"{user_id.lower()}@example.in"
    await pg.execute(
        "INSERT INTO users (id, email, phone, name, password_hash) VALUES ($1, $2, $3, $4, $5)",
        user_id,
        email,
        phone,
        f"User {user_id[-6:]}",
        password_hash_for_tests(),
    )
    for role in roles or (Role.DRIVER,):
        await pg.execute("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)", user_id, role)
    host_id = None
    if Role.HOST in roles:
        host_id = new_ulid()
        await pg.execute(
            "INSERT INTO hosts (id, user_id, display_name, kyc_status) "
            "VALUES ($1, $2, $3, 'verified')",
            host_id,
            user_id,
            f"Host {user_id[-6:]}",
        )
    granted = frozenset(roles or (Role.DRIVER,))
    return ApiUser(user_id, email, granted, host_id, bearer(settings, user_id, granted))


def bearer(settings: Settings, user_id: str, roles: frozenset[Role]) -> dict[str, str]:
    token = issue_access_token(
        settings.app.secret_key.get_secret_value(),
        user_id=user_id,
        roles=roles,
        now=datetime.now(UTC),
        ttl_s=settings.auth.access_ttl_s,
    )
    return {"Authorization": f"Bearer {token}"}
