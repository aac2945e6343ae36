"""GST invoices and credit notes against real PostgreSQL and the real API (cloud/invoices/).

Sessions are billed here the way the billing flow bills them — the ledger's ``bill_txn``
posted in the session's transaction — and invoiced with ``issue_invoice`` right after."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from cloud.accounts.models import Role
from cloud.billing.quote import Quote, Tariff, Usage, price
from cloud.chargers.models import PricingMode
from cloud.db import session_factory
from cloud.invoices.service import (
    BillMismatch,
    CreditExceedsInvoice,
    NotBilled,
    interstate,
    issue_credit_note,
    issue_invoice,
)
from cloud.ledger.entries import bill_txn
from cloud.ledger.service import post
from cloud.pg import PgConnection
from cloud.settings import sqlalchemy_url
from protocols.ids import new_ulid
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration

#: A valid GSTIN in Karnataka (29): a host there with a charger in Maharashtra supplies
#: inter-state (IGST); the platform's default GSTIN is in Maharashtra (27).
KA_GSTIN = "29AABCC1234D1Z7"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
#: One hour, 7.4 kWh at ₹18/kWh + ₹5 session fee (what the sessions below are priced at).
TARIFF = Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0)
USAGE = Usage(timedelta(hours=1), 7400)


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(sqlalchemy_url(db_url), pool_size=25, max_overflow=0)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@dataclass(frozen=True, slots=True)
class Site:
    host: ApiUser
    driver: ApiUser
    charger_id: str
    device_id: str


async def _site(pg: PgConnection, api: Api, *, gstin: str | None = None) -> Site:
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    await pg.execute("UPDATE users SET name = 'Ravi Kumar' WHERE id = $1", driver.id)
    if gstin is not None:
        await pg.execute(
            "UPDATE hosts SET gstin = $2, legal_name = 'Asha EV Services LLP', "
            "address = '5 Residency Road, Bengaluru', pincode = '560025' WHERE id = $1",
            host.host_id,
            gstin,
        )
    charger_id, device_id = new_ulid(), f"cm-{new_ulid().lower()}"
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device_id, host.host_id)
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, session_fee_paise, qr_code) VALUES ($1, $2, "
        "$3, 'Gate', '12 MG Road', 'Pune', 'Maharashtra', '411001', 18.5, 73.8, 1800, 500, $4)",
        charger_id,
        host.host_id,
        device_id,
        charger_id[-10:],
    )
    return Site(host, driver, charger_id, device_id)


async def _session(pg: PgConnection, site: Site) -> int:
    """A stopped session of one hour and 7.4 kWh."""
    session_id: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, $4, 'Remote', 'r', 'stopped', $5, $6, 0, 7400, 7400, 2, 2) "
        "RETURNING id",
        site.device_id,
        new_ulid(),
        site.charger_id,
        site.driver.id,
        NOW - timedelta(hours=1),
        NOW,
    )
    return session_id


async def _bill(db: AsyncSession, site: Site, session_id: int, quote: Quote) -> None:
    await post(
        db,
        bill_txn(
            session_id=session_id,
            driver_id=site.driver.id,
            host_id=str(site.host.host_id),
            quote=quote,
            host_gst_registered=False,
        ),
    )


async def test_a_billed_session_gets_one_invoice_with_the_rule_46_particulars(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site = await _site(pg, market_api)
    sid = await _session(pg, site)
    quote = price(TARIFF, USAGE)
    async with sessions() as db, db.begin():
        await _bill(db, site, sid, quote)
        invoice = await issue_invoice(db, sid, quote=quote, now=NOW)
        again = await issue_invoice(db, sid, now=NOW)  # idempotent, and repriced the same
    assert again.id == invoice.id
    # A host without a GSTIN: the platform is the supplier of record, in its own series.
    assert invoice.supplier == "27AAPFU0939F1ZV"
    assert invoice.serial == "INV/2627/000001"
    assert invoice.supplier_gstin == market_api.settings.billing.supplier_gstin
    assert (invoice.supplier_state_code, invoice.place_of_supply_code) == ("27", "27")
    assert invoice.recipient_name == "Ravi Kumar"
    assert invoice.sac == "998714"
    # The bill's own lines: 7.4 kWh x ₹18 = ₹133.20, + ₹5; CGST 9 % + SGST 9 %.
    assert [line["kind"] for line in invoice.lines] == ["energy", "session_fee"]
    assert invoice.taxable_paise == 13820 == quote.taxable_paise
    assert (invoice.cgst_paise, invoice.sgst_paise, invoice.igst_paise) == (1244, 1244, 0)
    assert invoice.total_paise == quote.total_paise == 16308
    counters = await pg.fetch("SELECT supplier, fy, kind, last_number FROM invoice_counters")
    assert [(r["supplier"], r["fy"], r["kind"], r["last_number"]) for r in counters] == [
        ("27AAPFU0939F1ZV", 2026, "invoice", 1)
    ]


async def test_a_registered_host_invoices_under_their_gstin_with_igst_across_states(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site = await _site(pg, market_api, gstin=KA_GSTIN)
    sid = await _session(pg, site)
    async with sessions() as db, db.begin():
        assert await interstate(db, sid)
        quote = price(TARIFF, USAGE, interstate=True)
        await _bill(db, site, sid, quote)
        invoice = await issue_invoice(db, sid, now=NOW)
    assert invoice.supplier == KA_GSTIN
    assert invoice.serial == "INV/2627/000001"  # the host's own series
    assert (invoice.supplier_gstin, invoice.supplier_name) == (KA_GSTIN, "Asha EV Services LLP")
    assert invoice.supplier_address == "5 Residency Road, Bengaluru 560025"
    assert (invoice.supplier_state_code, invoice.place_of_supply_code) == ("29", "27")
    assert (invoice.cgst_paise, invoice.sgst_paise, invoice.igst_paise) == (0, 0, 2488)
    assert invoice.total_paise == 16308


async def test_nothing_is_invoiced_but_what_was_billed(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site = await _site(pg, market_api)
    sid = await _session(pg, site)
    async with sessions() as db, db.begin():
        with pytest.raises(NotBilled):
            await issue_invoice(db, sid, now=NOW)
    bigger = price(TARIFF, Usage(timedelta(hours=1), 9000))
    async with sessions() as db:
        async with db.begin():
            await _bill(db, site, sid, bigger)
        async with db.begin():
            # Repriced from the meter (7.4 kWh), the lines do not add up to the bill.
            with pytest.raises(BillMismatch):
                await issue_invoice(db, sid, now=NOW)
    assert await pg.fetchval("SELECT count(*) FROM invoices") == 0
    assert await pg.fetchval("SELECT count(*) FROM invoice_counters") == 0


async def test_serials_stay_unique_and_gap_free_with_50_sessions_billed_concurrently(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """50 sessions billed and invoiced in 50 concurrent transactions (25 connections), with
    10 more that bill, take a number and roll back in between: the series is 1..50."""
    site = await _site(pg, market_api)
    billed = [await _session(pg, site) for _ in range(50)]
    doomed = [await _session(pg, site) for _ in range(10)]
    quote = price(TARIFF, USAGE)
    start = asyncio.Event()
    rng = random.Random(16)

    class Rollback(Exception):
        pass

    async def bill_and_invoice(sid: int, *, fail: bool) -> None:
        await start.wait()
        try:
            async with sessions() as db, db.begin():
                await _bill(db, site, sid, quote)
                await issue_invoice(db, sid, quote=quote, now=NOW)
                # Hold the transaction open a moment so the others queue on the counter.
                await asyncio.sleep(rng.random() / 50)
                if fail:
                    raise Rollback
        except Rollback:
            pass

    tasks = [bill_and_invoice(s, fail=False) for s in billed]
    tasks += [bill_and_invoice(s, fail=True) for s in doomed]
    rng.shuffle(tasks)
    running = [asyncio.create_task(t) for t in tasks]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*running)

    rows = await pg.fetch("SELECT session_id, number, serial FROM invoices ORDER BY number")
    assert sorted(r["session_id"] for r in rows) == sorted(billed)
    assert [r["number"] for r in rows] == list(range(1, 51))
    assert len({r["serial"] for r in rows}) == 50
    assert all(len(r["serial"]) <= 16 for r in rows)
    assert rows[-1]["serial"] == "INV/2627/000050"
    assert await pg.fetchval("SELECT last_number FROM invoice_counters") == 50


async def test_a_refund_after_invoicing_gets_a_credit_note_in_its_own_series(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site = await _site(pg, market_api)
    sid = await _session(pg, site)
    quote = price(TARIFF, USAGE)
    payment_id, refund_ids = new_ulid(), [new_ulid(), new_ulid()]
    await pg.execute(
        "INSERT INTO payments (id, user_id, session_id, provider, amount_paise, status) "
        "VALUES ($1, $2, $3, 'dummy', 16308, 'captured')",
        payment_id,
        site.driver.id,
        sid,
    )
    for n, (refund_id, amount) in enumerate(zip(refund_ids, (5000, 11308), strict=True)):
        await pg.execute(
            "INSERT INTO refunds (id, payment_id, amount_paise, status, reason) "
            "VALUES ($1, $2, $3, 'processed', $4)",
            refund_id,
            payment_id,
            amount,
            f"dispute {n}",
        )
    async with sessions() as db, db.begin():
        await _bill(db, site, sid, quote)
        invoice = await issue_invoice(db, sid, quote=quote, now=NOW)
        first = await issue_credit_note(
            db,
            sid,
            amount_paise=5000,
            reason="charger stopped early",
            refund_id=refund_ids[0],
            now=NOW,
        )
        assert (
            await issue_credit_note(
                db, sid, amount_paise=5000, reason="again", refund_id=refund_ids[0], now=NOW
            )
        ).id == first.id
        with pytest.raises(CreditExceedsInvoice):
            await issue_credit_note(db, sid, amount_paise=11309, reason="too much", now=NOW)
        second = await issue_credit_note(
            db, sid, amount_paise=11308, reason="rest", refund_id=refund_ids[1], now=NOW
        )
    assert (first.serial, second.serial) == ("CN/2627/000001", "CN/2627/000002")
    assert first.original_id == second.original_id == invoice.id
    assert first.total_paise == 5000
    assert first.taxable_paise == 4237  # 5000 x 13820 / 16308, half up
    assert first.cgst_paise + first.sgst_paise == 763
    # Credited in full: the notes add up to the invoice, line by line.
    for field in ("taxable_paise", "cgst_paise", "sgst_paise", "igst_paise", "total_paise"):
        assert getattr(first, field) + getattr(second, field) == getattr(invoice, field)


async def test_issued_documents_and_gstins_are_held_by_the_database(pg: PgConnection) -> None:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    with pytest.raises(Exception, match="ck_hosts_gstin_format"):
        await pg.execute(
            "INSERT INTO hosts (id, user_id, display_name, gstin, legal_name, address) "
            "VALUES ('H1', 'U1', 'A', '27aapfu0939f1zv', 'A', 'B')"
        )
    with pytest.raises(Exception, match="ck_hosts_gstin_has_address"):
        await pg.execute(
            "INSERT INTO hosts (id, user_id, display_name, gstin) "
            "VALUES ('H1', 'U1', 'A', '27AAPFU0939F1ZV')"
        )


async def _issued(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> tuple[Site, str]:
    site = await _site(pg, market_api)
    sid = await _session(pg, site)
    quote = price(TARIFF, USAGE)
    async with sessions() as db, db.begin():
        await _bill(db, site, sid, quote)
        invoice = await issue_invoice(db, sid, quote=quote, now=NOW)
    return site, invoice.id


async def test_invoices_are_frozen_once_issued(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, invoice_id = await _issued(market_api, pg, sessions)
    with pytest.raises(Exception, match="frozen"):
        await pg.execute("UPDATE invoices SET total_paise = 1 WHERE id = $1", invoice_id)
    with pytest.raises(Exception, match="frozen"):
        await pg.execute("DELETE FROM invoices WHERE id = $1", invoice_id)


async def test_the_driver_and_the_host_read_it_and_no_one_else(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site, invoice_id = await _issued(market_api, pg, sessions)
    other_site, other_id = await _issued(market_api, pg, sessions)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    client = market_api.client
    for who in (site.driver, site.host, admin):
        answer = await client.get(f"/invoices/{invoice_id}", headers=who.headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["serial"] == "INV/2627/000001"
        assert body["supplier"]["state"] == {"code": "27", "name": "Maharashtra"}
        assert body["place_of_supply"]["name"] == "Maharashtra"
        assert body["recipient"]["name"] == "Ravi Kumar"
        assert body["total_paise"] == 16308
        assert body["pdf_url"] == f"/invoices/{invoice_id}.pdf"
    for who in (other_site.driver, other_site.host):
        for path in (f"/invoices/{invoice_id}", f"/invoices/{invoice_id}.pdf"):
            assert (await client.get(path, headers=who.headers)).status_code == 404
        listed = (await client.get("/invoices", headers=who.headers)).json()["items"]
        assert [i["id"] for i in listed] == [other_id]
    everything = (await client.get("/invoices", headers=admin.headers)).json()["items"]
    assert {i["id"] for i in everything} == {invoice_id, other_id}


async def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A poppler tool, off the event loop."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, **kwargs)  # noqa: PLW1510 -- callers pass check=True

    return await asyncio.to_thread(run)


def _pgm_ink(path: Path) -> float:
    """The share of pixels that are not white in a binary PGM (P5) file."""
    data = path.read_bytes()
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P5"
    width, height = int(parts[1]), int(parts[2])
    pixels = parts[4][: width * height]
    return sum(1 for p in pixels if p < 200) / (width * height)


async def test_the_pdf_renders_the_serial_the_sac_and_the_rupee_sign(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    assert shutil.which("pdftoppm"), "poppler-utils (deploy/dev/bootstrap.sh installs it)"
    assert shutil.which("pdftotext"), "poppler-utils (deploy/dev/bootstrap.sh installs it)"
    site, invoice_id = await _issued(market_api, pg, sessions)
    answer = await market_api.client.get(f"/invoices/{invoice_id}.pdf", headers=site.driver.headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(answer.content)
    assert answer.content.startswith(b"%PDF-")

    words = (
        await _run(
            ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
        )
    ).stdout
    for expected in (
        "TAX INVOICE",
        "INV/2627/000001",
        "998714",
        "27AAPFU0939F1ZV",
        "Maharashtra (27)",
        "Ravi Kumar",
        "\u20b9163.08",
        "\u20b912.44",
    ):
        assert expected in words, f"{expected!r} not in the PDF's text:\n{words}"

    await _run(
        [
            "pdftoppm",
            "-f",
            "1",
            "-l",
            "1",
            "-r",
            "60",
            "-gray",
            "-singlefile",
            str(pdf),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    ink = _pgm_ink(tmp_path / "page.pgm")
    assert 0.01 < ink < 0.5, f"page 1 is {ink:.1%} ink: blank or black"
    await _run(
        [
            "pdftoppm",
            "-f",
            "1",
            "-l",
            "1",
            "-r",
            "80",
            "-png",
            "-singlefile",
            str(pdf),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    assert (tmp_path / "page.png").stat().st_size > 1000


async def test_a_credit_note_pdf_names_its_invoice(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    site, invoice_id = await _issued(market_api, pg, sessions)
    sid = await pg.fetchval("SELECT session_id FROM invoices WHERE id = $1", invoice_id)
    async with sessions() as db, db.begin():
        note = await issue_credit_note(db, sid, amount_paise=1000, reason="overcharge", now=NOW)
    answer = await market_api.client.get(f"/invoices/{note.id}.pdf", headers=site.host.headers)
    assert answer.status_code == 200
    (tmp_path / "cn.pdf").write_bytes(answer.content)
    words = (
        await _run(
            ["pdftotext", str(tmp_path / "cn.pdf"), "-"], check=True, capture_output=True, text=True
        )
    ).stdout
    for expected in ("CREDIT NOTE", "CN/2627/000001", "INV/2627/000001", "overcharge"):
        assert expected in words
    assert await pg.fetchval("SELECT count(*) FROM invoices") == 2


async def test_a_host_registers_a_gstin_and_invoices_under_it(
    market_api: Api, pg: PgConnection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    site = await _site(pg, market_api)
    other = await add_user(pg, market_api.settings, Role.HOST)
    client, path = market_api.client, "/host/gst-registration"
    body = {
        "gstin": KA_GSTIN,
        "legal_name": "Asha EV Services LLP",
        "address": "5 Residency Road, Bengaluru",
        "pincode": "560025",
    }
    before = await client.get(path, headers=site.host.headers)
    assert before.json()["gst_registered"] is False
    mistyped = await client.put(
        path, json={**body, "gstin": KA_GSTIN[:-1] + "8"}, headers=site.host.headers
    )
    assert mistyped.status_code == 422
    assert mistyped.json()["field"] == "gstin"
    answer = await client.put(path, json=body, headers=site.host.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["gst_registered"] is True
    assert answer.json()["state"] == {"code": "29", "name": "Karnataka"}
    taken = await client.put(path, json=body, headers=other.headers)
    assert taken.status_code == 409
    refused = await client.put(path, json=body, headers=site.driver.headers)
    assert refused.status_code == 403

    sid = await _session(pg, site)
    async with sessions() as db, db.begin():
        quote = price(TARIFF, USAGE, interstate=await interstate(db, sid))
        await _bill(db, site, sid, quote)
        invoice = await issue_invoice(db, sid, now=NOW)
    assert (invoice.supplier_gstin, invoice.igst_paise) == (KA_GSTIN, 2488)

    cleared = await client.delete(path, headers=site.host.headers)
    assert cleared.json()["gst_registered"] is False
    assert await pg.fetchval("SELECT gstin FROM hosts WHERE id = $1", site.host.host_id) is None
