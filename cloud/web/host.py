"""The host's pages: dashboard, add/edit a charger, pairing code and QR sticker, earnings
and payouts.

They live under ``/app/host`` (``/host/…`` is the JSON API's) and call what the API calls:
the charger service and its request bodies (one validation rule: the form is turned into
``ChargerCreate``/``ChargerUpdate`` and its errors are shown next to the fields), the
bookings service's approve/decline, the devices route's pairing code (its rate limit
included), the payouts routes' earnings and payout request (403 ``kyc-required`` shown as a
sentence), and cloud/chargers/qr.py for the sticker. Another host's charger is a 404 page,
as in the API; a signed-in user who is not a host gets a 403 page.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response, WebSocket
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.audit.actor import actor_of
from cloud.bookings import service as bookings
from cloud.bookings.models import BookingStatus
from cloud.chargers import access, editing, qr, schemas, views
from cloud.chargers.models import Charger, PricingMode
from cloud.chargers.status import live_status
from cloud.chargers.sticker import sticker_pdf as render_sticker
from cloud.deps import Db, State
from cloud.devices.router import pairing_code as issue_pairing_code
from cloud.errors import CloudError, Forbidden, KycRequired, NotFound, RateLimited
from cloud.payouts import router as payouts_api
from cloud.payouts import service as payouts
from cloud.payouts.schemas import PayoutRequestIn
from cloud.schemas import PathId
from cloud.sessions import ws
from cloud.web.chart import bar_chart
from cloud.web.format import rupees
from cloud.web.render import PageVisitor, Visitor, redirect, render, signin_redirect
from cloud.web.router import CsrfField, explain, page_socket_token
from protocols.enums import ConnectorType

router = APIRouter(include_in_schema=False)

#: Connector rows on the charger form (empty rows are left out; the API takes up to 8).
CONNECTOR_ROWS = 3
#: Weeks in the earnings chart.
CHART_WEEKS = 8
#: How often the dashboard's charger list refreshes itself without its push socket (seconds):
#: a device's state changes on the scale of its heartbeat, so faster polling would only load
#: the database.
LIVE_REFRESH_S = 10
#: ... and with it: news arrives pushed, but a device that goes silent publishes nothing (it
#: turns offline by age, ``device_offline_after_s``), so the list is still fetched this often.
LIVE_PUSHED_REFRESH_S = 60


def host_or_answer(request: Request, visitor: Visitor) -> Principal | Response:
    """The signed-in host, or the answer for anyone else (sign in; a 403 page)."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.HOST):
        return render(
            request,
            visitor,
            "message.html",
            status_code=403,
            title=visitor.gettext("For hosts"),
            error=visitor.gettext("This page is for hosts (charger owners)."),
            back="/app",
        )
    return visitor.principal


def _not_found(request: Request, visitor: Visitor) -> HTMLResponse:
    return render(request, visitor, "not_found.html", status_code=404)


# --- the dashboard ---------------------------------------------------------------------------


async def _charger_rows(
    db: AsyncSession, state: State, host: Principal
) -> list[tuple[Charger, Any]]:
    """The host's chargers, each with its live state (device online, connectors' status)."""
    now = datetime.now(UTC)
    try:
        mine = await editing.host_chargers(db, host)
    except Forbidden:
        mine = []
    offline_after_s = state.settings.marketplace.device_offline_after_s
    return [
        (charger, await live_status(db, charger, now=now, offline_after_s=offline_after_s))
        for charger in mine
    ]


@router.get("/app/host")
async def dashboard(request: Request, visitor: PageVisitor, db: Db, state: State) -> Response:
    """The host's chargers with their live state, and the booking requests to decide."""
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    rows = await _charger_rows(db, state, host)
    pending = await bookings.list_hosted(
        db,
        host.user_id,
        status=BookingStatus.PENDING,
        charger_id=None,
        limit=50,
        offset=0,
        now=datetime.now(UTC),
    )
    names = {c.id: c.name for c, _ in rows}
    return render(
        request,
        visitor,
        "host.html",
        chargers=rows,
        pending=pending.items,
        names=names,
        refresh_s=LIVE_REFRESH_S,
        pushed_refresh_s=LIVE_PUSHED_REFRESH_S,
        now=datetime.now(UTC),
    )


@router.get("/app/host/live")
async def live_chargers(request: Request, visitor: PageVisitor, db: Db, state: State) -> Response:
    """The dashboard's charger list alone (an HTML fragment), for static/host.js to swap in
    when the push socket says a charger changed (every ``LIVE_REFRESH_S`` seconds while the
    socket is down); without JavaScript the dashboard is reloaded instead."""
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    rows = await _charger_rows(db, state, host)
    return render(request, visitor, "_host_chargers.html", chargers=rows, now=datetime.now(UTC))


@router.websocket("/app/host/live/ws")
async def live_pushes(websocket: WebSocket) -> None:
    """The dashboard's push socket (cloud/sessions/ws.py ``stream_host``): a frame when one
    of the host's chargers has news, so static/host.js fetches ``/app/host/live`` then rather
    than every ``LIVE_REFRESH_S`` seconds. Same-origin pages only, signed in by the cookie."""
    same_origin, token = await page_socket_token(websocket)
    if same_origin:
        await ws.stream_host(websocket, token=token)


async def _decide(
    request: Request,
    visitor: Visitor,
    state: State,
    booking_id: str,
    csrf: str,
    *,
    approve: bool,
) -> Response:
    """Approve or decline a booking request (the bookings service decides who may)."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    decide_with = bookings.approve_booking if approve else bookings.decline_booking
    try:
        async with state.sessions() as db, db.begin():
            await decide_with(db, host, booking_id, datetime.now(UTC))
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        return render(
            request,
            visitor,
            "message.html",
            status_code=409,
            title=visitor.gettext("Not decided"),
            error=explain(visitor, exc),
            back="/app/host",
        )
    return redirect("/app/host", visitor)


@router.post("/app/host/bookings/{booking_id}/approve")
async def approve(
    request: Request,
    visitor: PageVisitor,
    state: State,
    booking_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    return await _decide(request, visitor, state, booking_id, csrf, approve=True)


@router.post("/app/host/bookings/{booking_id}/decline")
async def decline(
    request: Request,
    visitor: PageVisitor,
    state: State,
    booking_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    return await _decide(request, visitor, state, booking_id, csrf, approve=False)


# --- add and edit a charger ------------------------------------------------------------------


def paise_of(text: str) -> int | str:
    """Rupees as typed (``12.50``) → paise; the text back when it is not an amount (the
    schema then names the field)."""
    try:
        amount = Decimal(text.strip().replace(",", "") or "0")
    except InvalidOperation:
        return text
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        return text
    return int(amount * 100)


def _number(text: str) -> float | str:
    try:
        return float(text.strip())
    except ValueError:
        return text


def _watts(text: str) -> int | str:
    try:
        kw = Decimal(text.strip())
    except InvalidOperation:
        return text
    return int(kw * 1000) if kw.is_finite() and kw == kw.quantize(Decimal("0.001")) else text


def _form_body(form: dict[str, str], pricing_kept: schemas.PricingOut | None) -> dict[str, Any]:
    """The API's charger body from the form's fields (amounts in rupees, power in kW)."""
    mode = form.get("mode", PricingMode.PER_KWH.value)
    pricing: dict[str, Any] = pricing_kept.model_dump(mode="json") if pricing_kept else {}
    pricing.update(
        mode=mode,
        price_per_kwh_paise=0,
        price_per_hour_paise=0,
        session_fee_paise=paise_of(form.get("session_fee", "")),
    )
    pricing[f"price_{mode}_paise"] = paise_of(form.get("price", ""))
    connectors = []
    for row in range(1, CONNECTOR_ROWS + 1):
        kind, power = form.get(f"type_{row}", ""), form.get(f"power_{row}", "").strip()
        if kind or power:
            connectors.append({"number": row, "type": kind, "max_power_w": _watts(power)})
    return {
        "name": form.get("name", "").strip(),
        "location": {
            "address": form.get("address", "").strip(),
            "city": form.get("city", ""),
            "state": form.get("state", ""),
            "pincode": form.get("pincode", "").strip(),
            "latitude": _number(form.get("latitude", "")),
            "longitude": _number(form.get("longitude", "")),
        },
        "connectors": connectors,
        "pricing": pricing,
    }


def _field_of(loc: tuple[int | str, ...]) -> str:
    """The form field a schema error is about (``("location", "pincode")`` → ``pincode``)."""
    if not loc:
        return "form"
    if loc[0] == "location" and len(loc) > 1:
        return str(loc[1])
    if loc[0] == "connectors":
        if len(loc) > 2 and isinstance(loc[1], int):
            return ("type_" if loc[2] == "type" else "power_") + str(loc[1] + 1)
        return "connectors"
    if loc[0] == "pricing":
        return "session_fee" if len(loc) > 1 and loc[1] == "session_fee_paise" else "price"
    return str(loc[0])


def _hints(visitor: Visitor) -> dict[str, str]:
    """What each field needs, said plainly (the schema's own message names a regex)."""
    _ = visitor.gettext
    return {
        "name": _("Enter a name (up to 120 characters)."),
        "address": _("Enter the street address (at least 3 characters)."),
        "city": _("Enter the city."),
        "state": _("Enter the state."),
        "pincode": _("Enter the 6-digit PIN code."),
        "latitude": _("Enter the latitude as a number between -90 and 90 (for example 18.5204)."),
        "longitude": _(
            "Enter the longitude as a number between -180 and 180 (for example 73.8567)."
        ),
        "price": _("Enter the price in rupees, above zero (for example 18.50)."),
        "session_fee": _("Enter the session fee in rupees (for example 5), or leave it empty."),
        "connectors": _("Add at least one connector: its type and power."),
        "type": _("Choose the connector's type."),
        "power": _("Enter the power in kW (0.5 to 400)."),
    }


def _errors(exc: ValidationError, visitor: Visitor) -> dict[str, str]:
    hints = _hints(visitor)
    found: dict[str, str] = {}
    for error in exc.errors():
        field = _field_of(tuple(error["loc"]))
        hint = hints.get(field.rstrip("0123456789").rstrip("_"), error["msg"])
        found.setdefault(field, hint)
    return found


def _form_of(charger: Charger, connectors: list[schemas.ConnectorOut]) -> dict[str, str]:
    mode = charger.pricing_mode
    price = (
        charger.price_per_kwh_paise if mode is PricingMode.PER_KWH else charger.price_per_hour_paise
    )
    form = {
        "name": charger.name,
        "address": charger.address,
        "city": charger.city,
        "state": charger.state,
        "pincode": charger.pincode,
        "latitude": str(charger.latitude),
        "longitude": str(charger.longitude),
        "mode": mode.value,
        "price": f"{price / 100:.2f}",
        "session_fee": f"{charger.session_fee_paise / 100:.2f}",
    }
    for k in connectors:
        form[f"type_{k.number}"] = k.type.value
        form[f"power_{k.number}"] = f"{Decimal(k.max_power_w) / 1000:g}"
    return form


def _charger_form(
    request: Request,
    visitor: Visitor,
    *,
    form: dict[str, str],
    charger_id: str | None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    photos: list[schemas.PhotoOut] | None = None,
    meters: list[schemas.MeterHealthOut] | None = None,
) -> HTMLResponse:
    return render(
        request,
        visitor,
        "host_charger.html",
        status_code=status_code,
        form=form,
        errors=errors or {},
        charger_id=charger_id,
        rows=range(1, CONNECTOR_ROWS + 1),
        types=list(ConnectorType),
        modes=list(PricingMode),
        photos=photos,
        meters=meters,
    )


async def _posted(request: Request) -> dict[str, str]:
    posted = await request.form()
    return {k: v[:300] for k, v in posted.items() if isinstance(v, str)}


@router.get("/app/host/chargers/new")
async def new_charger(request: Request, visitor: PageVisitor) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    return _charger_form(
        request, visitor, form={"mode": "per_kwh", "type_1": "Type2"}, charger_id=None
    )


@router.post("/app/host/chargers/new")
async def create_charger(
    request: Request, visitor: PageVisitor, state: State, csrf: CsrfField = ""
) -> Response:
    """Create through ``ChargerCreate`` and the charger service: a wrong field is shown next
    to it, with everything typed kept."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    form = await _posted(request)
    try:
        body = schemas.ChargerCreate.model_validate(_form_body(form, None))
        async with state.sessions() as db, db.begin():
            charger = await editing.create_charger(db, host, body)
    except ValidationError as exc:
        return _charger_form(
            request,
            visitor,
            form=form,
            charger_id=None,
            errors=_errors(exc, visitor),
            status_code=422,
        )
    except CloudError as exc:
        return _charger_form(
            request,
            visitor,
            form=form,
            charger_id=None,
            status_code=409,
            errors={"form": explain(visitor, exc)},
        )
    return redirect(f"/app/host/chargers/{charger.id}", visitor)


async def _owned(db: AsyncSession, host: Principal, charger_id: str) -> Charger | None:
    try:
        return await access.editable_charger(db, host, charger_id)
    except NotFound:
        return None


@router.get("/app/host/chargers/{charger_id}")
async def edit_charger(
    request: Request, visitor: PageVisitor, db: Db, charger_id: PathId
) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    charger = await _owned(db, host, charger_id)
    if charger is None:
        return _not_found(request, visitor)
    connectors = [views.connector_out(k) for k in await views.connectors_of(db, charger.id)]
    view = await views.host_view(db, charger)
    return _charger_form(
        request,
        visitor,
        form=_form_of(charger, connectors),
        charger_id=charger.id,
        photos=view.photos,
        meters=view.meters,
    )


@router.post("/app/host/chargers/{charger_id}")
async def update_charger(
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    """Edit through ``ChargerUpdate`` (pricing fields the form does not show are kept)."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    form = await _posted(request)
    try:
        async with state.sessions() as db, db.begin():
            charger = await _owned(db, host, charger_id)
            if charger is None:
                return _not_found(request, visitor)
            kept = views.pricing_out(charger)
            body = schemas.ChargerUpdate.model_validate(_form_body(form, kept))
            await editing.update_charger(db, host, charger_id, body)
    except ValidationError as exc:
        return _charger_form(
            request,
            visitor,
            form=form,
            charger_id=charger_id,
            errors=_errors(exc, visitor),
            status_code=422,
        )
    except CloudError as exc:
        return _charger_form(
            request,
            visitor,
            form=form,
            charger_id=charger_id,
            status_code=409,
            errors={"form": explain(visitor, exc)},
        )
    return redirect("/app/host", visitor)


# --- pairing code and QR sticker -------------------------------------------------------------


@router.post("/app/host/chargers/{charger_id}/pairing-code")
async def pairing_code(
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    """A one-time code for the agent (``POST /chargers/{id}/pairing-code``'s own answer,
    its rate limit included), shown once."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        async with state.sessions() as db, db.begin():
            issued = await issue_pairing_code(charger_id, host, state, db)
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        # The route's own refusals: too many codes asked for (429), or no host profile.
        code_status = 429 if isinstance(exc, RateLimited) else 403
        return render(
            request,
            visitor,
            "message.html",
            status_code=code_status,
            title=visitor.gettext("No code"),
            error=explain(visitor, exc),
            back="/app/host",
        )
    return render(
        request,
        visitor,
        "host_pairing.html",
        code=issued.code,
        words=qr.code_in_words(issued.code),
        expires_at=issued.expires_at,
        charger_id=charger_id,
    )


@router.get("/app/host/chargers/{charger_id}/sticker")
async def sticker_page(
    request: Request, visitor: PageVisitor, db: Db, state: State, charger_id: PathId
) -> Response:
    """The printable QR sticker: the QR (cloud/chargers/qr.py), the short code and the code
    spelt out, for a driver whose camera fails."""
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    charger = await _owned(db, host, charger_id)
    if charger is None:
        return _not_found(request, visitor)
    url = qr.unlock_url(state.settings.app.public_base_url, charger.qr_code)
    picture = "data:image/svg+xml;base64," + base64.b64encode(qr.qr_svg(url)).decode()
    return render(
        request,
        visitor,
        "host_sticker.html",
        charger=charger,
        url=url,
        picture=picture,
        words=qr.code_in_words(charger.qr_code),
    )


@router.get("/app/host/chargers/{charger_id}/sticker.pdf")
async def sticker_pdf(
    request: Request, visitor: PageVisitor, db: Db, state: State, charger_id: PathId
) -> Response:
    """The same sticker as an A6 PDF (cloud/chargers/sticker.py), to print at a shop."""
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    charger = await _owned(db, host, charger_id)
    if charger is None:
        return _not_found(request, visitor)
    url = qr.unlock_url(state.settings.app.public_base_url, charger.qr_code)
    return Response(
        render_sticker(name=charger.name, url=url, code=charger.qr_code),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="sticker-{charger.qr_code}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )


# --- earnings and payouts --------------------------------------------------------------------


def _week_label(monday: date) -> str:
    return f"{monday.day}/{monday.month}"


async def _earnings_context(
    db: AsyncSession, state: State, host: Principal, visitor: Visitor
) -> dict[str, Any] | None:
    """The earnings page's figures (``GET /host/earnings``'s and ``GET /host/payouts``'s
    answers, and the weekly chart); None for a user without a host profile yet."""
    try:
        balance = await payouts_api.host_earnings(db, state, host)
        listed = await payouts_api.host_payouts(db, host, limit=20)
    except NotFound:
        return None
    weeks = await payouts.weekly_earnings(
        db, balance.host_id, now=datetime.now(UTC), weeks=CHART_WEEKS
    )
    chart = bar_chart(
        weeks,
        label=visitor.gettext("Earnings per week, last %(n)d weeks") % {"n": CHART_WEEKS},
        week_label=_week_label,
        amount=rupees,
    )
    return {
        "balance": balance,
        "weeks": weeks,
        "chart": chart,
        "payouts": listed.items,
        "week_label": _week_label,
    }


def _earnings_page(
    request: Request,
    visitor: Visitor,
    context: dict[str, Any] | None,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    if context is None:
        return render(
            request,
            visitor,
            "message.html",
            status_code=404,
            title=visitor.gettext("Earnings"),
            error=visitor.gettext("Add a charger first: earnings come from its sessions."),
            back="/app/host",
        )
    return render(
        request, visitor, "host_earnings.html", status_code=status_code, error=error, **context
    )


@router.get("/app/host/earnings")
async def earnings(request: Request, visitor: PageVisitor, db: Db, state: State) -> Response:
    """``GET /host/earnings``'s figures, the last weeks as a bar chart, and the payouts."""
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    return _earnings_page(request, visitor, await _earnings_context(db, state, host, visitor))


@router.post("/app/host/payouts")
async def request_payout(
    request: Request,
    visitor: PageVisitor,
    state: State,
    csrf: CsrfField = "",
    amount: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """``POST /host/payouts`` (its KYC and balance rules): a refusal is explained on the
    earnings page, kindly."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    _ = visitor.gettext
    error: str | None = None
    status_code = 409
    try:
        asked = paise_of(amount) if amount.strip() else None
        body = None if asked is None else PayoutRequestIn.model_validate({"amount_paise": asked})
        async with state.sessions() as db, db.begin():
            await payouts_api.request_payout(db, state, host, actor_of(host, request, "host"), body)
    except ValidationError:
        error, status_code = _("Enter an amount in rupees, or leave it empty for all."), 422
    except KycRequired:
        status_code = 403
        error = _(
            "Payouts start once your identity is verified (KYC). Your earnings are "
            "kept safe meanwhile; they will be payable as soon as it is done."
        )
    except CloudError as exc:
        error = explain(visitor, exc)
    if error is None:
        return redirect("/app/host/earnings", visitor)
    async with state.sessions() as db:
        context = await _earnings_context(db, state, host, visitor)
    return _earnings_page(request, visitor, context, error=error, status_code=status_code)
