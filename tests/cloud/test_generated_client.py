"""A client generated from ``/openapi.json`` by a standard generator works (issue 17).

``openapi-python-client`` (from PyPI, pinned in the dev extra) builds a typed client from the
document the running API serves; the test imports it and, through its typed models only,
logs in, searches, books, and reads error answers as the document's problem models: a 409
as :class:`Problem`, a 422 as :class:`ValidationProblem` with its ``errors[]``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from tests.support.api_process import clear_rate_limits
from tests.support.bookings_fixtures import add_charger, next_slot
from tests.support.market import TEST_PASSWORD, Api, add_user

pytestmark = pytest.mark.integration

PACKAGE = "cm_generated_client"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    """Where the client is generated; its package is forgotten again afterwards."""
    yield tmp_path
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _generate(spec: dict[str, Any], directory: Path) -> str:
    """Run the generator on ``spec``; returns its output (warnings included)."""
    spec_file = directory / "openapi.json"
    spec_file.write_text(json.dumps(spec))
    # No post hooks: formatting the generated code is not what is tested.
    config = directory / "generator.json"
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": PACKAGE}))
    cli = Path(sys.executable).with_name("openapi-python-client")
    proc = subprocess.run(
        [
            str(cli),
            "generate",
            "--path",
            str(spec_file),
            "--meta",
            "none",
            "--output-path",
            str(directory / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_logs_in_searches_books_and_reads_problems(
    market_api: Api, pg: PgConnection, generated: Path
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    charger = await add_charger(pg, host)
    await clear_rate_limits()  # every test logs in from 127.0.0.1
    spec = (await market_api.client.get("/openapi.json")).json()

    output = _generate(spec, generated)
    # Only binary answers (QR images, photos, invoice PDFs, KYC documents) have no model;
    # nothing else may be skipped.
    binary = ("qr.", "photos/{photo_id}", ".pdf", "/documents/{kind}")
    skipped = [line for line in output.splitlines() if line.startswith("WARNING parsing")]
    assert all(any(part in line for part in binary) for line in skipped), output
    sys.path.insert(0, str(generated))

    client_mod = _module("client")
    models = _module("models")
    login = _module("api.accounts.login")
    search = _module("api.chargers.search_chargers")
    create_booking = _module("api.bookings.create_booking")
    transport = httpx.ASGITransport(app=market_api.app)

    anonymous = client_mod.Client(base_url="http://api", httpx_args={"transport": transport})
    tokens = await login.asyncio(
        client=anonymous, body=models.LoginRequest(email=driver.email, password=TEST_PASSWORD)
    )
    assert isinstance(tokens, models.TokenPair), tokens
    me = client_mod.AuthenticatedClient(
        base_url="http://api", token=tokens.access_token, httpx_args={"transport": transport}
    )

    page = await search.asyncio(client=anonymous, lat=18.52, lon=73.85, radius_km=5.0)
    assert isinstance(page, models.SearchPage), page
    assert [hit.id for hit in page.items] == [charger.id]

    start = next_slot(datetime.now(UTC), days=2)
    body = models.BookingCreate(
        charger_id=page.items[0].id, connector=1, start=start, end=start + timedelta(hours=1)
    )
    booked = await create_booking.asyncio(client=me, body=body)
    assert isinstance(booked, models.BookingWithPin), booked
    assert booked.charger_id == charger.id

    # The same slot again: a 409, read as the document's Problem model.
    again = await create_booking.asyncio_detailed(client=me, body=body)
    assert again.status_code == 409
    assert isinstance(again.parsed, models.Problem), again.parsed
    assert again.parsed.type_.endswith("/booking-overlap")
    assert again.parsed.status == 409

    # A refused field: a 422, read as ValidationProblem with typed errors[].
    wrong = await login.asyncio_detailed(
        client=anonymous, body=models.LoginRequest(email="not-an-email", password="x")
    )
    assert wrong.status_code == 422
    assert isinstance(wrong.parsed, models.ValidationProblem), wrong.parsed
    assert wrong.parsed.errors
    assert isinstance(wrong.parsed.errors[0], models.FieldError)
    assert wrong.parsed.errors[0].field.startswith("body")
