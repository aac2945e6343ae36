"""HTTP routes of listings: search, public views, host editing, photos, QR codes, moderation.

Who may do what: creating and editing need the host role, and the service only finds the
caller's own chargers (another host's is a 404). Reading is public for approved, listed
chargers; photos and QR pictures of a listing not yet visible are served to its owner and
admins only. Charts are for the owner and admins; drivers see the live status in the
public view.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from cloud.accounts.tokens import Principal
from cloud.audit.actor import AdminActor
from cloud.chargers import access, editing, moderation, photos, qr, schemas, search, views
from cloud.chargers.models import Charger, ModerationStatus, PricingMode
from cloud.chargers.status import chart, live_status
from cloud.chargers.storage import LocalPhotoStorage, PhotoStorage
from cloud.chargers.views import blocked_out
from cloud.deps import AdminUser, Db, HostUser, State, optional_principal
from cloud.errors import InvalidRequest, NotFound
from cloud.openapi import links, problems
from cloud.schemas import Instant, PathId
from cloud.web.render import page_visitor
from cloud.web.router import qr_page, wants_html
from protocols.enums import ConnectorType
from protocols.meters.quantities import Quantity

router = APIRouter(tags=["chargers"])

ChargerId = PathId
PhotoId = PathId
#: Multipart framing around the photo: a body above photo_max_bytes + this is refused unread.
MULTIPART_OVERHEAD_BYTES = 16 * 1024

MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
#: A chart's bucket width (:data:`cloud.chargers.status.BUCKETS`).
Bucket = Literal["1m", "5m", "15m", "1h", "6h", "1d"]


def photo_storage(state: State) -> PhotoStorage:
    """The photo store (a dependency, so tests and deployments can swap it)."""
    return LocalPhotoStorage(state.settings.marketplace.photo_dir)


Storage = Annotated[PhotoStorage, Depends(photo_storage)]


# --- search and public views -----------------------------------------------------------------


@router.get("/chargers")
async def search_chargers(
    *,
    state: State,
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    # At least 10 m: a subnormal radius (5e-324 km) underflowed in earth_box() (a 500).
    radius_km: Annotated[
        float, Query(ge=0.01, le=search.MAX_RADIUS_KM, allow_inf_nan=False)
    ] = 10.0,
    connector_type: ConnectorType | None = None,
    min_kw: Annotated[float, Query(ge=0, le=400, allow_inf_nan=False)] = 0,
    max_price_paise: Annotated[int | None, Query(ge=0, le=schemas.MAX_PRICE_PAISE)] = None,
    pricing_mode: PricingMode | None = None,
    available_now: bool = False,
    start: Annotated[Instant | None, Query(alias="from")] = None,
    end: Annotated[Instant | None, Query(alias="to")] = None,
    min_rating: Annotated[float, Query(ge=0, le=5, allow_inf_nan=False)] = 0,
    verified_host: bool = False,
    page: Annotated[int, Query(ge=1, le=search.MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=search.MAX_PAGE_SIZE)] = 20,
) -> schemas.SearchPage:
    """Approved, listed chargers within ``radius_km`` of (lat, lon), nearest first.

    Pages are numbered from 1 and ordered by (distance, id), so a page is stable while the
    data is.

    Rules between parameters, which a parameter's own schema cannot state (each answers 422
    naming the parameter): ``from`` and ``to`` come together; ``from`` is before ``to``; the
    window is at most 7 days; ``available_now`` and ``from``/``to`` are exclusive ways to ask
    for availability.
    """
    now = datetime.now(UTC)
    availability: search.Availability | None = None
    if (start is None) != (end is None):
        raise InvalidRequest("from and to go together", field="to" if end is None else "from")
    if start is not None and end is not None:
        if available_now:
            raise InvalidRequest("use available_now or from/to, not both", field="available_now")
        if not start < end:
            raise InvalidRequest("from must be before to", field="to")
        if end - start > search.MAX_WINDOW:
            raise InvalidRequest(f"a window is at most {search.MAX_WINDOW.days} days", field="to")
        availability = search.Availability(start.astimezone(UTC), end.astimezone(UTC), live=False)
    elif available_now:
        availability = search.Availability(
            now,
            now + search.NOW_WINDOW,
            live=True,
            online_since=now - timedelta(seconds=state.settings.marketplace.device_offline_after_s),
        )
    query = search.SearchQuery(
        lat=lat,
        lon=lon,
        radius_m=radius_km * 1000.0,
        connector_type=connector_type,
        min_power_w=math.ceil(round(min_kw * 1000, 6)),
        max_price_paise=max_price_paise,
        pricing_mode=pricing_mode,
        min_rating_hundredths=math.ceil(round(min_rating * 100, 6)),
        verified_host=verified_host,
        availability=availability,
        page=page,
        page_size=page_size,
    )
    return await search.search(state.search_reader, query)


async def _view(db: Db, state: State, charger: Charger) -> schemas.ChargerView:
    public = await views.public_view(db, charger)
    live = await live_status(
        db,
        charger,
        now=datetime.now(UTC),
        offline_after_s=state.settings.marketplace.device_offline_after_s,
    )
    return schemas.ChargerView(**public.model_dump(), status=live)


@router.get("/chargers/{charger_id}")
async def get_charger(*, charger_id: ChargerId, db: Db, state: State) -> schemas.ChargerView:
    """An approved, listed charger with its live status (online, connectors, last reading)."""
    return await _view(db, state, await access.public_charger(db, charger_id))


@router.get(
    "/c/{code}",
    response_model=schemas.ChargerView,
    responses={200: {"content": {"text/html": {}}}},
)
async def resolve_code(
    *, code: Annotated[str, Path(max_length=32)], db: Db, state: State, request: Request
) -> schemas.ChargerView | Response:
    """The charger behind a QR short code (case, hyphens and O/0, I/L/1 forgiven). The QR
    sticker's target: a browser (``Accept`` preferring ``text/html``) gets the charger's
    page (cloud/web/router.py), every other client this JSON."""
    if wants_html(request):
        return await qr_page(request, await page_visitor(request, state), db, code)
    return await _view(db, state, await access.charger_by_code(db, code))


# --- host: create, edit, list ----------------------------------------------------------------


_CHARGER = {"charger_id": "$response.body#/id"}


@router.post(
    "/chargers",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
    openapi_extra=links(
        201,
        get_host_charger=_CHARGER,
        update_charger=_CHARGER,
        put_availability=_CHARGER,
        add_blocked_period=_CHARGER,
        upload_photo=_CHARGER,
        qr_svg=_CHARGER,
    ),
)
async def create_charger(
    *, body: schemas.ChargerCreate, db: Db, principal: HostUser
) -> schemas.ChargerHostView:
    """A new listing, ``pending`` until an admin approves it; it gets its QR code now."""
    charger = await editing.create_charger(db, principal, body)
    return await views.host_view(db, charger)


@router.patch("/chargers/{charger_id}", responses=problems(409))
async def update_charger(
    *, charger_id: ChargerId, body: schemas.ChargerUpdate, db: Db, principal: HostUser
) -> schemas.ChargerHostView:
    charger = await editing.update_charger(db, principal, charger_id, body)
    return await views.host_view(db, charger)


@router.get("/host/chargers")
async def list_host_chargers(*, db: Db, principal: HostUser) -> schemas.HostChargerList:
    chargers = await editing.host_chargers(db, principal)
    return schemas.HostChargerList(items=[await views.host_view(db, c) for c in chargers])


@router.get("/host/chargers/{charger_id}")
async def get_host_charger(
    *, charger_id: ChargerId, db: Db, principal: HostUser
) -> schemas.ChargerHostView:
    return await views.host_view(db, await access.editable_charger(db, principal, charger_id))


@router.put("/chargers/{charger_id}/availability")
async def put_availability(
    *, charger_id: ChargerId, body: schemas.AvailabilityIn, db: Db, principal: HostUser
) -> schemas.AvailabilityOut:
    """Replace the weekly schedule (local times in the charger's zone)."""
    charger = await editing.set_availability(db, principal, charger_id, body)
    return (await views.public_view(db, charger)).availability


@router.post(
    "/chargers/{charger_id}/blocked-periods",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
    openapi_extra=links(
        201,
        delete_blocked_period={
            "charger_id": "$request.path.charger_id",
            "period_id": "$response.body#/id",
        },
    ),
)
async def add_blocked_period(
    *, charger_id: ChargerId, body: schemas.BlockedPeriodIn, db: Db, principal: HostUser
) -> schemas.BlockedPeriodOut:
    row = await editing.add_blocked_period(db, principal, charger_id, body, now=datetime.now(UTC))
    charger = await access.editable_charger(db, principal, charger_id)
    return blocked_out(row, ZoneInfo(charger.timezone))


@router.delete(
    "/chargers/{charger_id}/blocked-periods/{period_id}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_blocked_period(
    *,
    charger_id: ChargerId,
    period_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    db: Db,
    principal: HostUser,
) -> None:
    await editing.delete_blocked_period(db, principal, charger_id, period_id)


# --- photos ----------------------------------------------------------------------------------


@router.post(
    "/chargers/{charger_id}/photos",
    status_code=status.HTTP_201_CREATED,
    responses=problems(413),
    openapi_extra=links(
        201,
        get_photo={"charger_id": "$request.path.charger_id", "photo_id": "$response.body#/id"},
        delete_photo={"charger_id": "$request.path.charger_id", "photo_id": "$response.body#/id"},
    )
    | {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["photo"],
                        "properties": {"photo": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_photo(
    *,
    charger_id: ChargerId,
    request: Request,
    db: Db,
    state: State,
    storage: Storage,
    principal: HostUser,
) -> schemas.PhotoOut:
    """One JPEG, PNG or WebP image in the ``photo`` field of a multipart form.

    What the form's schema cannot state: the bytes must be a JPEG, PNG or WebP image
    (checked by content, not by name or declared type; 422 otherwise), a listing holds a
    bounded number of photos (422 past it), and the photo has a size limit (413).
    """
    max_bytes = state.settings.marketplace.photo_max_bytes
    data = await read_photo_form(request, max_bytes)
    photo = await photos.add_photo(db, storage, principal, charger_id, data, max_bytes=max_bytes)
    return schemas.PhotoOut(
        id=photo.id,
        content_type=photo.content_type,
        size_bytes=photo.size_bytes,
        url=views.photo_url(charger_id, photo.id),
    )


async def read_photo_form(request: Request, max_bytes: int) -> bytes:
    """The bytes of the ``photo`` file of a multipart form (at most ``max_bytes`` + 1 of
    them), refused by size before anything past the limit is read (also for dispute photos,
    cloud/disputes/router.py)."""
    data, _ = await read_photo_and_fields(request, max_bytes)
    return data


async def read_photo_and_fields(
    request: Request, max_bytes: int, *, fields: tuple[str, ...] = ()
) -> tuple[bytes, dict[str, str]]:
    """:func:`read_photo_form`, also returning the text ``fields`` named (a page's CSRF
    token travels in the same multipart body); any other text field is ignored."""
    body_max = max_bytes + MULTIPART_OVERHEAD_BYTES
    # The form is parsed here, not by FastAPI, so an oversized body is refused by its
    # declared length before anything is read or spooled to disk ...
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_max:
        raise photos.too_large(max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the photo as multipart/form-data", field="photo")
    try:
        # ... and a chunked body (no length) as it streams: Starlette spools a file part to
        # disk without any limit of its own.
        async with _bounded(request, body_max, max_bytes).form(
            max_files=1, max_fields=max(1, len(fields))
        ) as form:
            texts = {k: v for k in fields if isinstance(v := form.get(k), str)}
            upload = form.get("photo")
            if upload is None or isinstance(upload, str):
                raise InvalidRequest("the form needs a file in the photo field", field="photo")
            # One byte past the limit is enough to know it is too big.
            return await upload.read(max_bytes + 1), texts
    except (MultiPartException, HTTPException) as exc:
        # Starlette turns a malformed form into its own 400; ours is a problem document.
        raise InvalidRequest("the multipart form could not be read", field="photo") from exc


def _bounded(request: Request, body_max: int, photo_max: int) -> Request:
    """``request`` whose body stops with :class:`PayloadTooLarge` past ``body_max`` bytes."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > body_max:
                raise photos.too_large(photo_max)
        return message

    return Request(request.scope, receive)


@router.get(
    "/chargers/{charger_id}/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_photo(
    *,
    charger_id: ChargerId,
    photo_id: PhotoId,
    db: Db,
    storage: Storage,
    principal: MaybeUser,
) -> Response:
    photo = await photos.find_photo(db, charger_id, photo_id)
    if not await access.photo_readable(db, principal, photo.id):
        raise NotFound("photo", photo_id)
    data = await storage.get(photo.storage_key)
    charger = await db.get(Charger, charger_id)
    # A photo of a listing not (yet) visible is its owner's: no shared cache may keep it.
    shared = charger is not None and access.visible(charger)
    return Response(
        data,
        media_type=photo.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": f"{'public' if shared else 'private'}, max-age=86400, immutable",
        },
    )


@router.delete("/chargers/{charger_id}/photos/{photo_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_photo(
    *,
    charger_id: ChargerId,
    photo_id: PhotoId,
    state: State,
    storage: Storage,
    principal: HostUser,
) -> None:
    # Our own transaction: the bytes go only once the row's deletion is committed.
    async with state.sessions() as db, db.begin():
        key = await photos.delete_photo(db, principal, charger_id, photo_id)
    await storage.delete(key)


# --- QR --------------------------------------------------------------------------------------


async def _qr_url(db: Db, state: State, principal: Principal | None, charger_id: str) -> str:
    charger = await db.get(Charger, charger_id)
    if charger is None:
        raise NotFound("charger", charger_id)
    if not access.visible(charger):
        if principal is None:
            raise NotFound("charger", charger_id)
        await access.editable_charger(db, principal, charger_id)
    return qr.unlock_url(state.settings.app.public_base_url, charger.qr_code)


@router.get(
    "/chargers/{charger_id}/qr.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
async def qr_svg(*, charger_id: ChargerId, db: Db, state: State, principal: MaybeUser) -> Response:
    """The QR code for the charger's sticker: ``{public_base_url}/c/{code}``."""
    url = await _qr_url(db, state, principal, charger_id)
    return Response(qr.qr_svg(url), media_type="image/svg+xml")


@router.get(
    "/chargers/{charger_id}/qr.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def qr_png(*, charger_id: ChargerId, db: Db, state: State, principal: MaybeUser) -> Response:
    url = await _qr_url(db, state, principal, charger_id)
    return Response(qr.qr_png(url), media_type="image/png")


# --- telemetry -------------------------------------------------------------------------------


@router.get("/chargers/{charger_id}/telemetry", responses=problems(409))
async def get_telemetry(
    *,
    charger_id: ChargerId,
    db: Db,
    state: State,
    principal: HostUser,
    start: Annotated[Instant, Query(alias="from")],
    end: Annotated[Instant, Query(alias="to")],
    bucket: Bucket = "5m",
    quantity: Quantity = Quantity.POWER_W,
    meter_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = None,
) -> schemas.TelemetrySeries:
    """Bucketed readings for the owner's (or an admin's) charts: count, mean, min, max.

    Rules the parameters' schemas cannot state (422, naming the parameter): ``from`` is
    before ``to``, the range is at most 31 days and holds a bounded number of buckets. A
    charger with no device attached yet has no readings to chart (409).
    """
    charger = await access.editable_charger(db, principal, charger_id)
    return await chart(
        db,
        state.telemetry_backend,
        charger,
        quantity=quantity,
        start=start,
        end=end,
        bucket=bucket,
        meter_id=meter_id,
    )


# --- moderation ------------------------------------------------------------------------------


@router.get("/admin/chargers")
async def moderation_queue(
    *,
    db: Db,
    _admin: AdminUser,
    moderation_status: Annotated[ModerationStatus, Query(alias="status")] = (
        ModerationStatus.PENDING
    ),
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> schemas.HostChargerList:
    chargers = await moderation.moderation_queue(db, moderation_status, limit=limit)
    return schemas.HostChargerList(items=[await views.host_view(db, c) for c in chargers])


@router.post("/admin/chargers/{charger_id}/approve", responses=problems(409))
async def approve(
    *, charger_id: ChargerId, db: Db, actor: AdminActor, body: schemas.ModerationIn | None = None
) -> schemas.ChargerHostView:
    note = body.note if body else None
    charger = await moderation.moderate(db, charger_id, ModerationStatus.APPROVED, note, actor)
    return await views.host_view(db, charger)


@router.post("/admin/chargers/{charger_id}/reject", responses=problems(409))
async def reject(
    *, charger_id: ChargerId, body: schemas.ModerationNoteIn, db: Db, actor: AdminActor
) -> schemas.ChargerHostView:
    charger = await moderation.moderate(db, charger_id, ModerationStatus.REJECTED, body.note, actor)
    return await views.host_view(db, charger)


@router.post("/admin/chargers/{charger_id}/suspend", responses=problems(409))
async def suspend(
    *, charger_id: ChargerId, body: schemas.ModerationNoteIn, db: Db, actor: AdminActor
) -> schemas.ChargerHostView:
    charger = await moderation.moderate(
        db, charger_id, ModerationStatus.SUSPENDED, body.note, actor
    )
    return await views.host_view(db, charger)
