"""A cookie-signed-in page client for the page tests (the password form, as a browser
signs in), from a client address of its own: sign-in is rate-limited per address."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.support.market import TEST_PASSWORD, Api, ApiUser


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


@asynccontextmanager
async def signed_in(api: Api, user: ApiUser) -> AsyncIterator[httpx.AsyncClient]:
    address = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api") as client:
        token = csrf_of((await client.get("/app/signin")).text)
        form = {
            "email": user.email,
            "password": TEST_PASSWORD,
            "action": "signin",
            "csrf": token,
            "next": "/app",
        }
        signed = await client.post("/app/signin/password", data=form)
        assert signed.status_code == 303, signed.text
        yield client
