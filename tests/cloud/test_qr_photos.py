"""QR codes encode the public unlock URL; photos are checked by their bytes and stored safely.

segno cannot decode, so the PNG is decoded here (zlib + PNG filters, stdlib only) and its
module grid compared with segno's matrix for the expected URL: a wrong URL, error level or
border would change the grid.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import segno

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.chargers import qr
from cloud.chargers.storage import LocalPhotoStorage, MemoryPhotoStorage, check_key, new_storage_key
from cloud.errors import NotFound
from cloud.pg import PgConnection
from tests.cloud.test_listings import approve, assert_problem, create_listing
from tests.support.cloud_env import make_settings
from tests.support.market import Api, add_user
from tests.support.mosquitto import Broker

PHOTO_MAX = 4096


def png_image() -> bytes:
    import io

    out = io.BytesIO()
    segno.make_qr("a photo").save(out, kind="png", scale=2)
    return out.getvalue()


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 200 + b"\xff\xd9"
WEBP = b"RIFF" + struct.pack("<I", 200) + b"WEBPVP8 " + b"\x00" * 196


@pytest.fixture
async def api(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> AsyncIterator[Api]:
    """The API with a small photo limit, so "too big" is cheap to send."""
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_MARKETPLACE_PHOTO_MAX_BYTES=str(PHOTO_MAX),
        CHARGEMITRA_APP_PUBLIC_BASE_URL="https://chargemitra.example.in",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, settings)


def assert_too_large(response: httpx.Response) -> None:
    assert_problem(response, 413, "photo")
    body = response.json()
    assert body["type"].endswith("/content-too-large"), body
    assert body["max_bytes"] == PHOTO_MAX


def decode_png_modules(data: bytes, scale: int, border: int) -> list[list[bool]]:
    """The dark/light module grid of a greyscale or palette PNG as segno writes it."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    palette: list[tuple[int, int, int]] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + chunk) == crc, kind
        if kind == b"IHDR":
            header = chunk
        elif kind == b"PLTE":
            palette = [tuple(chunk[i : i + 3]) for i in range(0, len(chunk), 3)]  # type: ignore[misc]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert interlace == 0
    assert colour in (0, 3)
    raw = zlib.decompress(idat)
    stride = (width * depth + 7) // 8
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        filt, cur = line[0], bytearray(line[1:])
        bpp = max(1, depth // 8)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if filt == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif filt == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif filt == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[i] = (cur[i] + pred) & 0xFF
        rows.append(bytes(cur))
        prev = bytes(cur)

    def pixel_dark(x: int, y: int) -> bool:
        bit = x * depth
        value = (rows[y][bit // 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1)
        if colour == 3:
            return bool(sum(palette[value]) < 384)
        return bool(value < (1 << depth) // 2)

    modules = width // scale
    assert width == height
    assert width % scale == 0
    grid = [
        [pixel_dark(x * scale + scale // 2, y * scale + scale // 2) for x in range(modules)]
        for y in range(modules)
    ]
    # The quiet zone is light all round.
    assert not any(
        grid[y][x]
        for y in range(modules)
        for x in range(modules)
        if min(x, y, modules - 1 - x, modules - 1 - y) < border
    )
    return [row[border : modules - border] for row in grid[border : modules - border]]


async def test_qr_svg_and_png_encode_the_public_unlock_url(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    created = await create_listing(api, host)
    cid = created["id"]
    expected_url = f"https://chargemitra.example.in/c/{created['qr_code']}"
    # Before approval only the owner (and admins) get the picture: it goes on the sticker.
    assert_problem(await api.client.get(f"/chargers/{cid}/qr.svg"), 404)
    owner_svg = await api.client.get(f"/chargers/{cid}/qr.svg", headers=host.headers)
    assert owner_svg.status_code == 200
    await approve(api, admin, cid)
    svg = await api.client.get(f"/chargers/{cid}/qr.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    root = ET.fromstring(svg.content)  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}title").text == expected_url  # type: ignore[union-attr]
    assert svg.content == qr.qr_svg(expected_url) == owner_svg.content
    png = await api.client.get(f"/chargers/{cid}/qr.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    grid = decode_png_modules(png.content, qr.PNG_SCALE, qr.BORDER)
    symbol = segno.make_qr(expected_url, error="m", boost_error=False)
    assert grid == [[bool(v) for v in row] for row in symbol.matrix]
    # ... and not the matrix of a neighbouring URL.
    other = segno.make_qr(expected_url + "X", error="m", boost_error=False)
    assert grid != [[bool(v) for v in row] for row in other.matrix]


async def test_short_codes_resolve_forgivingly(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    created = await create_listing(api, host)
    await pg.execute("UPDATE chargers SET qr_code = '0A1B2C3D' WHERE id = $1", created["id"])
    # Pending: the code leads nowhere yet.
    assert_problem(await api.client.get("/c/0A1B2C3D"), 404)
    await approve(api, admin, created["id"])
    for typed in ("0A1B2C3D", "oa1b2c3d", "OAIB-2C3D", "0alb 2c3d"):
        response = await api.client.get(f"/c/{typed}")
        assert response.status_code == 200, typed
        assert response.json()["id"] == created["id"]
        assert response.json()["qr_code"] == "0A1B2C3D"
    for wrong in ("0A1B2C3E", "0A1B2C3", "0A1B2C3DD", "UUUUUUUU", "%2e%2e"):
        assert_problem(await api.client.get(f"/c/{wrong}"), 404)
    # A slash ends the route: no such page at all.
    assert (await api.client.get("/c/..%2F..%2Fetc")).status_code == 404


def test_short_codes_use_the_unambiguous_alphabet() -> None:
    codes = {qr.new_short_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == qr.CODE_CHARS and set(c) <= set(qr.ALPHABET) for c in codes)
    assert not set("ILOU") & set(qr.ALPHABET)
    assert all(qr.normalize_short_code(c.lower()) == c for c in codes)


async def test_photos_upload_serve_and_delete(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    created = await create_listing(api, host)
    cid = created["id"]
    client = api.client
    uploaded = {}
    for name, data, kind in (
        ("p.png", png_image(), "image/png"),
        ("j.jpg", JPEG, "image/jpeg"),
        ("w.webp", WEBP, "image/webp"),
    ):
        # The client's content type is ignored: the bytes decide.
        response = await client.post(
            f"/chargers/{cid}/photos",
            files={"photo": (name, data, "application/octet-stream")},
            headers=host.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["content_type"] == kind
        assert body["size_bytes"] == len(data)
        uploaded[body["id"]] = (body["url"], data, kind)
    photo_dir = api.settings.marketplace.photo_dir
    files = [p for p in photo_dir.rglob("*") if p.is_file()]
    assert len(files) == 3
    assert all(check_key(p.name) and p.parent.parent == photo_dir for p in files)
    # Pending listing: photos are the owner's (and admins') only.
    url, data, kind = next(iter(uploaded.values()))
    assert_problem(await client.get(url), 404)
    for who in (host, admin):
        response = await client.get(url, headers=who.headers)
        assert response.content == data
        # Not public yet: a shared cache must not keep it.
        assert response.headers["cache-control"].startswith("private")
    await approve(api, admin, cid)
    public = (await client.get(f"/chargers/{cid}")).json()
    assert [p["id"] for p in public["photos"]] == list(uploaded)
    for url, data, kind in uploaded.values():
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == kind
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"].startswith("public")
    photo_id = next(iter(uploaded))
    # Another host can neither delete nor add.
    other = await add_user(pg, api.settings, Role.HOST)
    assert_problem(
        await client.delete(f"/chargers/{cid}/photos/{photo_id}", headers=other.headers), 404
    )
    response = await client.delete(f"/chargers/{cid}/photos/{photo_id}", headers=host.headers)
    assert response.status_code == 204
    assert_problem(await client.get(f"/chargers/{cid}/photos/{photo_id}"), 404)
    assert len([p for p in photo_dir.rglob("*") if p.is_file()]) == 2
    # A photo id under another charger's path is not found.
    second = await create_listing(api, host)
    remaining = list(uploaded)[1]
    assert_problem(
        await client.get(f"/chargers/{second['id']}/photos/{remaining}", headers=host.headers), 404
    )


async def test_photos_refused_by_type_size_and_form(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    created = await create_listing(api, host)
    url = f"/chargers/{created['id']}/photos"
    client = api.client
    html = b"<html><script>alert(1)</script></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    gif = b"GIF89a" + b"\x00" * 100
    for data, claimed in (
        (html, "image/png"),
        (svg, "image/svg+xml"),
        (gif, "image/gif"),
        (b"", "image/png"),
    ):
        response = await client.post(
            url, files={"photo": ("x.png", data, claimed)}, headers=host.headers
        )
        assert_problem(response, 422, "photo")
    # Too big is 413 Content Too Large: just over, far over (refused by its declared length,
    # unread), and far over without a declared length (chunked: refused as it streams).
    too_big = b"\x89PNG\r\n\x1a\n" + b"\x00" * PHOTO_MAX
    response = await client.post(
        url, files={"photo": ("big.png", too_big, "image/png")}, headers=host.headers
    )
    assert_too_large(response)
    huge = b"\x89PNG\r\n\x1a\n" + b"\x00" * (PHOTO_MAX + 64 * 1024)
    response = await client.post(
        url, files={"photo": ("huge.png", huge, "image/png")}, headers=host.headers
    )
    assert_too_large(response)
    boundary = "cmboundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="h.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + huge
        + f"\r\n--{boundary}--\r\n".encode()
    )

    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for i in range(0, len(form), 4096):
            sent += len(form[i : i + 4096])
            yield form[i : i + 4096]

    response = await client.post(
        url,
        content=chunks(),
        headers={**host.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response)
    assert sent < len(form)  # refused mid-stream, not read (and spooled) to the end
    # Not a form, no file, a text field instead of a file, a broken form.
    assert_problem(
        await client.post(
            url, content=JPEG, headers={**host.headers, "content-type": "image/jpeg"}
        ),
        422,
        "photo",
    )
    assert_problem(
        await client.post(
            url, files={"other": ("j.jpg", JPEG, "image/jpeg")}, headers=host.headers
        ),
        422,
        "photo",
    )
    assert_problem(
        await client.post(url, data={"photo": "not a file"}, headers=host.headers), 422, "photo"
    )
    # A multipart body without a boundary. (A body cut off mid-file is not tried: Starlette
    # 1.10 then leaves the part's temporary file for the garbage collector to close.)
    broken = await client.post(
        url,
        content=b'--xx\r\nContent-Disposition: form-data; name="photo"\r\n\r\nabc\r\n--xx--',
        headers={**host.headers, "content-type": "multipart/form-data"},
    )
    assert_problem(broken, 422, "photo")
    assert await pg.fetchval("SELECT count(*) FROM charger_photos") == 0
    photo_dir = api.settings.marketplace.photo_dir
    assert not photo_dir.exists() or not [p for p in photo_dir.rglob("*") if p.is_file()]


async def test_client_file_names_never_become_paths(
    api: Api, pg: PgConnection, tmp_path: Path
) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    created = await create_listing(api, host)
    photo_dir = api.settings.marketplace.photo_dir
    for name in ("../../escape.jpg", "/etc/passwd", "..\\..\\win.jpg", "a/../../b.jpg"):
        response = await api.client.post(
            f"/chargers/{created['id']}/photos",
            files={"photo": (name, JPEG, "image/jpeg")},
            headers=host.headers,
        )
        assert response.status_code == 201
    stored = [
        p
        for p in photo_dir.parent.rglob("*")
        if p.is_file() and p.suffix in {".jpg", ".png", ".webp"}
    ]
    assert len(stored) == 4
    assert all(p.is_relative_to(photo_dir) and check_key(p.name) for p in stored)
    keys = [r["storage_key"] for r in await pg.fetch("SELECT storage_key FROM charger_photos")]
    assert all(check_key(k) for k in keys)
    # Path tricks in the URL reach no file either.
    for trick in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", keys[0]):
        response = await api.client.get(
            f"/chargers/{created['id']}/photos/{trick}", headers=host.headers
        )
        assert response.status_code in (404, 422)


async def test_storage_refuses_keys_it_did_not_mint(tmp_path: Path) -> None:
    local = LocalPhotoStorage(tmp_path / "photos")
    memory = MemoryPhotoStorage()
    key = new_storage_key("png")
    for store in (local, memory):
        await store.put(key, b"bytes")
        assert await store.get(key) == b"bytes"
        for bad in (
            "../x.png",
            "/etc/passwd",
            "A" * 32 + ".png",
            key + "/..",
            key.replace(".png", ".svg"),
            "",
        ):
            with pytest.raises(ValueError, match="not a photo storage key"):
                await store.get(bad)
            with pytest.raises(ValueError, match="not a photo storage key"):
                await store.put(bad, b"x")
        await store.delete(key)
        await store.delete(key)  # already gone: fine
        with pytest.raises(NotFound):
            await store.get(key)
    assert not [p for p in (tmp_path / "photos").rglob("*") if p.is_file()]


async def test_a_listing_holds_at_most_ten_photos(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    created = await create_listing(api, host)
    url = f"/chargers/{created['id']}/photos"
    for _ in range(10):
        response = await api.client.post(
            url, files={"photo": ("j.jpg", JPEG, "image/jpeg")}, headers=host.headers
        )
        assert response.status_code == 201
    response = await api.client.post(
        url, files={"photo": ("j.jpg", JPEG, "image/jpeg")}, headers=host.headers
    )
    assert_problem(response, 422, "photo")
