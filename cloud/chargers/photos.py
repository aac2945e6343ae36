"""Listing photos: type told by the bytes' magic numbers, size bounded, bytes in storage.

The client's ``Content-Type`` and file name are ignored: a photo is JPEG, PNG or WebP because
its first bytes say so, and it is served back with the type found here (plus
``X-Content-Type-Options: nosniff`` from the router), so an uploaded HTML or SVG file can
never be served as a page from our origin.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.chargers.access import editable_charger
from cloud.chargers.models import ChargerPhoto
from cloud.chargers.storage import PhotoStorage, new_storage_key
from cloud.errors import InvalidRequest, NotFound, PayloadTooLarge

#: Photos per listing.
MAX_PHOTOS = 10


@dataclass(frozen=True, slots=True)
class ImageType:
    content_type: str
    extension: str


JPEG = ImageType("image/jpeg", "jpg")
PNG = ImageType("image/png", "png")
WEBP = ImageType("image/webp", "webp")


def sniff_image(data: bytes) -> ImageType | None:
    """JPEG, PNG or WebP by magic number (JFIF/Exif SOI, PNG signature, RIFF....WEBP)."""
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the photo is larger than {max_bytes} bytes", field="photo", max_bytes=max_bytes
    )


def check_photo(data: bytes, max_bytes: int) -> ImageType:
    if not data:
        raise InvalidRequest("the photo is empty", field="photo")
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    kind = sniff_image(data)
    if kind is None:
        raise InvalidRequest("a photo must be a JPEG, PNG or WebP image", field="photo")
    return kind


async def add_photo(
    db: AsyncSession,
    storage: PhotoStorage,
    principal: Principal,
    charger_id: str,
    data: bytes,
    *,
    max_bytes: int,
) -> ChargerPhoto:
    charger = await editable_charger(db, principal, charger_id, lock=True)
    kind = check_photo(data, max_bytes)
    count = await db.scalar(
        select(func.count()).select_from(ChargerPhoto).where(ChargerPhoto.charger_id == charger.id)
    )
    if (count or 0) >= MAX_PHOTOS:
        raise InvalidRequest(f"a listing has at most {MAX_PHOTOS} photos", field="photo")
    key = new_storage_key(kind.extension)
    # Bytes first, row second: a crash in between leaves an orphan file, never a row whose
    # bytes are missing.
    await storage.put(key, data)
    photo = ChargerPhoto(
        charger_id=charger.id, storage_key=key, content_type=kind.content_type, size_bytes=len(data)
    )
    db.add(photo)
    await db.flush()
    return photo


async def find_photo(db: AsyncSession, charger_id: str, photo_id: str) -> ChargerPhoto:
    photo = await db.scalar(
        select(ChargerPhoto).where(
            ChargerPhoto.id == photo_id, ChargerPhoto.charger_id == charger_id
        )
    )
    if photo is None:
        raise NotFound("photo", photo_id)
    return photo


async def delete_photo(
    db: AsyncSession, principal: Principal, charger_id: str, photo_id: str
) -> str:
    """Delete the row; returns the storage key, whose bytes the caller removes only after
    the commit (a failure in between leaves an orphan file, never a row without bytes)."""
    charger = await editable_charger(db, principal, charger_id, lock=True)
    photo = await find_photo(db, charger.id, photo_id)
    await db.delete(photo)
    await db.flush()
    return photo.storage_key
