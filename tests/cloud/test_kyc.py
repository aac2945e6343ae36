"""Host KYC: PAN and Aadhaar checks, documents encrypted at rest, the admin's decision, the
trusted badge in search, and no payout before verification."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from cloud.accounts.models import Role
from cloud.errors import DocumentUnreadable
from cloud.kyc import identity
from cloud.kyc.storage import MAGIC, DocumentStore
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.market import Api, ApiUser, add_user

PDF = b"%PDF-1.4\n% proof of address: 12 MG Road, Pune 411001 KYC-PLAINTEXT-MARKER\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32 + b"PAN CARD ABCPE1234F KYC-PLAINTEXT-MARKER"
#: 11 digits and their Verhoeff check digit: a well-formed Aadhaar number (not a real one).
AADHAAR = "49731852046" + identity.verhoeff_digit("49731852046")


def _files(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes (what anyone with the disk can read)."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- the pure checks -------------------------------------------------------------------------


def test_verhoeff_matches_the_published_example_and_catches_typing_errors() -> None:
    # Verhoeff (1969) / the usual worked example: the check digit of 236 is 3.
    assert identity.verhoeff_digit("236") == "3"
    assert identity.verhoeff_valid("2363")
    assert identity.verhoeff_valid(AADHAAR)
    for i in range(12):  # every single-digit error is caught
        for d in "0123456789":
            if d != AADHAAR[i]:
                assert not identity.verhoeff_valid(AADHAAR[:i] + d + AADHAAR[i + 1 :])
    for i in range(11):  # every adjacent transposition of different digits too
        if AADHAAR[i] != AADHAAR[i + 1]:
            swapped = AADHAAR[:i] + AADHAAR[i + 1] + AADHAAR[i] + AADHAAR[i + 2 :]
            assert not identity.verhoeff_valid(swapped)


def test_aadhaar_is_only_ever_masked_and_a_bad_one_is_refused() -> None:
    spaced = f"{AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]}"
    assert identity.mask_aadhaar(spaced) == f"XXXX-XXXX-{AADHAAR[-4:]}"
    bad_digit = AADHAAR[:-1] + str((int(AADHAAR[-1]) + 1) % 10)
    for bad in (bad_digit, "1" + AADHAAR[1:], AADHAAR[:-1], "abcd" + AADHAAR[4:]):
        with pytest.raises(identity.IdentityError) as caught:
            identity.mask_aadhaar(bad)
        assert caught.value.field == "aadhaar"


def test_pan_shape_and_document_types() -> None:
    assert identity.check_pan(" abcpe1234f ") == "ABCPE1234F"
    for bad in ("ABCPE1234", "ABCP11234F", "ABCPE12345", "ABCPEX234F", ""):
        with pytest.raises(identity.IdentityError):
            identity.check_pan(bad)
    assert identity.sniff_document(PDF) is identity.PDF
    assert identity.sniff_document(PNG) is identity.PNG
    assert identity.sniff_document(b"\xff\xd8\xff\xe0rest") is identity.JPEG
    assert identity.sniff_document(b"<html><script>") is None


async def test_documents_on_disk_are_unreadable_without_the_key(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, secrets.token_bytes(32))
    key = await store.put(PDF)
    ((path, sealed),) = _files(tmp_path).items()
    assert b"KYC-PLAINTEXT-MARKER" not in sealed
    assert b"%PDF" not in sealed
    assert await store.get(key) == PDF
    with pytest.raises(DocumentUnreadable):
        await DocumentStore(tmp_path, secrets.token_bytes(32)).get(key)
    # The same bytes under another document's name do not open (the name is bound in).
    other = await store.put(PNG)
    (tmp_path / other[:2] / other).write_bytes(sealed)
    with pytest.raises(DocumentUnreadable):
        await store.get(other)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(DocumentUnreadable):
        await store.get(key)
    # Cut short anywhere — inside the nonce, or before the tag is whole — it is the same
    # typed problem, not a bare ValueError from the cipher.
    for cut in (len(MAGIC), len(MAGIC) + 5, len(MAGIC) + 12, len(MAGIC) + 27):
        path.write_bytes(sealed[:cut])
        with pytest.raises(DocumentUnreadable):
            await store.get(key)


# --- over HTTP -------------------------------------------------------------------------------

pytestmark = pytest.mark.integration


async def _unverified_host(pg: PgConnection, api: Api) -> ApiUser:
    host = await add_user(pg, api.settings, Role.HOST)
    await pg.execute("UPDATE hosts SET kyc_status = 'not_started' WHERE id = $1", host.host_id)
    return host


async def _listed_charger(pg: PgConnection, host: ApiUser, lat: float) -> str:
    charger_id = new_ulid()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, qr_code, moderation_status, is_listed) VALUES ($1, $2, "
        "'Gate', '1 Road', 'Pune', 'MH', '411001', $3, 73.85, 1800, $4, 'approved', true)",
        charger_id,
        host.host_id,
        lat,
        charger_id[-10:],
    )
    return charger_id


def _form(
    *, pan: str = "ABCPE1234F", aadhaar: str | None = AADHAAR, pan_card: bytes = PNG
) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    data = {"pan": pan} | ({"aadhaar": aadhaar} if aadhaar is not None else {})
    files = {
        "pan_card": ("pan.png", pan_card, "image/png"),
        "address_proof": ("bill.pdf", PDF, "application/pdf"),
    }
    return data, files


async def test_a_host_is_verified_gets_the_badge_and_may_ask_for_payouts(
    market_api: Api, pg: PgConnection
) -> None:
    api = market_api.client
    host = await _unverified_host(pg, market_api)
    other = await _unverified_host(pg, market_api)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    mine = await _listed_charger(pg, host, 18.52)
    theirs = await _listed_charger(pg, other, 18.521)

    refused = await api.post("/host/payouts", headers=host.headers)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/kyc-required")
    assert refused.json()["kyc_status"] == "not_started"

    for form, field in (
        (_form(pan="ABCPE12345"), "pan"),
        (_form(aadhaar=AADHAAR[:-1] + str((int(AADHAAR[-1]) + 1) % 10)), "aadhaar"),
        (_form(pan_card=b"<html>not an image</html>"), "pan_card"),
    ):
        bad = await api.post("/host/kyc", data=form[0], files=form[1], headers=host.headers)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == field
    huge = _form(pan_card=PNG + b"\x00" * market_api.settings.kyc.document_max_bytes)
    too_big = await api.post("/host/kyc", data=huge[0], files=huge[1], headers=host.headers)
    assert too_big.status_code == 413
    assert await pg.fetchval("SELECT count(*) FROM kyc_submissions") == 0

    data, files = _form()
    sent = await api.post("/host/kyc", data=data, files=files, headers=host.headers)
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert body["kyc_status"] == "submitted"
    submission = body["submission"]
    assert submission["aadhaar_masked"] == f"XXXX-XXXX-{AADHAAR[-4:]}"
    assert {d["kind"]: d["content_type"] for d in submission["documents"]} == {
        "pan_card": "image/png",
        "address_proof": "application/pdf",
    }
    again = await api.post("/host/kyc", data=data, files=files, headers=host.headers)
    assert again.status_code == 409
    # The full Aadhaar number is nowhere in the database; the documents' bytes are sealed.
    dump = await pg.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT row_to_json(s) AS t FROM kyc_submissions s "
        "UNION ALL SELECT row_to_json(a) FROM audit_log a UNION ALL SELECT row_to_json(h) "
        "FROM hosts h) rows"
    )
    assert AADHAAR not in dump
    assert AADHAAR[-4:] in dump
    stored = _files(market_api.settings.kyc.document_dir)
    assert len(stored) == 2
    assert all(b"KYC-PLAINTEXT-MARKER" not in data for data in stored.values())

    queue = (await api.get("/admin/kyc", headers=admin.headers)).json()["items"]
    assert [q["id"] for q in queue] == [submission["id"]]
    doc = await api.get(
        f"/admin/kyc/{submission['id']}/documents/address_proof", headers=admin.headers
    )
    assert (doc.status_code, doc.content, doc.headers["content-type"]) == (
        200,
        PDF,
        "application/pdf",
    )
    assert doc.headers["cache-control"] == "no-store"
    rejected = await api.post(
        f"/admin/kyc/{submission['id']}/reject",
        json={"reason": "address proof is older than 3 months"},
        headers=admin.headers,
    )
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    mine_now = (await api.get("/host/kyc", headers=host.headers)).json()
    assert mine_now["kyc_status"] == "rejected"
    assert mine_now["rejection_reason"] == "address proof is older than 3 months"
    late = await api.post(f"/admin/kyc/{submission['id']}/verify", headers=admin.headers)
    assert late.status_code == 409

    second = (await api.post("/host/kyc", data=data, files=files, headers=host.headers)).json()
    verified = await api.post(
        f"/admin/kyc/{second['submission']['id']}/verify", headers=admin.headers
    )
    assert (verified.status_code, verified.json()["status"]) == (200, "verified")
    assert (await api.get("/host/kyc", headers=host.headers)).json()["kyc_status"] == "verified"

    # The badge: in every hit, and as a filter; and on the listing itself.
    near = {"lat": "18.52", "lon": "73.85", "radius_km": "5"}
    hits = (await api.get("/chargers", params=near)).json()["items"]
    assert {h["id"]: h["verified_host"] for h in hits} == {mine: True, theirs: False}
    only = (await api.get("/chargers", params=near | {"verified_host": "true"})).json()
    assert [h["id"] for h in only["items"]] == [mine]
    assert (await api.get(f"/chargers/{mine}")).json()["verified_host"] is True
    assert (await api.get(f"/chargers/{theirs}")).json()["verified_host"] is False

    # Verified: the payout gate is open (nothing is payable yet: 409, no longer 403).
    assert (await api.post("/host/payouts", headers=host.headers)).status_code == 409

    actions = await pg.fetch(
        "SELECT action, actor_user_id, before, after FROM audit_log WHERE entity = 'host' "
        "AND entity_id = $1 ORDER BY id",
        host.host_id,
    )
    assert [(r["action"], r["actor_user_id"]) for r in actions] == [
        ("kyc.submit", host.id),
        ("kyc.document_read", admin.id),
        ("kyc.reject", admin.id),
        ("kyc.submit", host.id),
        ("kyc.verify", admin.id),
    ]
    assert json.loads(actions[-1]["after"]) == {"kyc_status": "verified"}


async def test_who_may_touch_kyc(market_api: Api, pg: PgConnection) -> None:
    api = market_api.client
    host = await _unverified_host(pg, market_api)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    data, files = _form()
    sent = (await api.post("/host/kyc", data=data, files=files, headers=host.headers)).json()
    sid = sent["submission"]["id"]
    assert (
        await api.post("/host/kyc", data=data, files=files, headers=driver.headers)
    ).status_code == 403
    for path in (f"/admin/kyc/{sid}", f"/admin/kyc/{sid}/documents/pan_card", "/admin/kyc"):
        assert (await api.get(path, headers=host.headers)).status_code == 403
    assert (await api.post(f"/admin/kyc/{sid}/verify", headers=host.headers)).status_code == 403
    assert (await api.get("/host/kyc", headers=driver.headers)).status_code == 403


async def test_an_altered_document_is_a_500_problem_of_its_own_type(
    market_api: Api, pg: PgConnection
) -> None:
    """A stored document that no longer authenticates (a flipped byte on disk) is the
    server's fault, not the admin's: a 500 ``document-unreadable`` problem (no storage key
    in it), and no read is audited; the other document still opens."""
    api = market_api.client
    host = await _unverified_host(pg, market_api)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    data, files = _form()
    sent = await api.post("/host/kyc", data=data, files=files, headers=host.headers)
    assert sent.status_code == 201, sent.text
    submission_id = sent.json()["submission"]["id"]
    key = await pg.fetchval(
        "SELECT storage_key FROM kyc_documents WHERE submission_id = $1 AND kind = 'pan_card'",
        submission_id,
    )
    path = market_api.settings.kyc.document_dir / key[:2] / key
    sealed = bytearray(path.read_bytes())
    sealed[-1] ^= 1
    path.write_bytes(bytes(sealed))

    broken = await api.get(f"/admin/kyc/{submission_id}/documents/pan_card", headers=admin.headers)
    assert broken.status_code == 500, broken.text
    assert broken.headers["content-type"] == "application/problem+json"
    problem = broken.json()
    assert problem["type"].endswith("/document-unreadable")
    assert key not in broken.text
    assert (
        await pg.fetchval("SELECT count(*) FROM audit_log WHERE action = 'kyc.document_read'") == 0
    )
    fine = await api.get(
        f"/admin/kyc/{submission_id}/documents/address_proof", headers=admin.headers
    )
    assert (fine.status_code, fine.content) == (200, PDF)
