"""The driver's pages: scan → sign in → quote → pay → unlock → live session → receipt.

Every page calls the services the JSON API calls (accounts, chargers, billing quote,
payments checkout, sessions unlock/stop, receipts, invoices): a rule lives in one place. A
page that needs a signed-in driver sends anyone else to ``/app/signin?next=…``; another
user's session, booking or invoice is a 404 page, as in the API. Forms post with a CSRF
token and answer with a redirect (303) or the same page showing what went wrong.

Routes are not in the OpenAPI document (they answer HTML); docs/cloud.md ("Pages") lists
them, and tests/cloud/test_bola.py has their rows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request, Response, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts import service as accounts
from cloud.accounts.otp import otp_message
from cloud.accounts.router import _limit, _otp_store, get_sms_sender
from cloud.accounts.schemas import (
    LoginRequest,
    OtpRequest,
    OtpVerifyRequest,
    RegisterRequest,
)
from cloud.billing.schemas import QuoteRequest
from cloud.billing.service import quote
from cloud.bookings import service as bookings
from cloud.bookings.models import Booking, BookingStatus
from cloud.chargers import access, views
from cloud.chargers.models import Charger, PricingMode
from cloud.chargers.status import live_state
from cloud.deps import Db, State
from cloud.errors import (
    BookingNotActive,
    ChargerNoAnswer,
    ChargerOffline,
    CloudError,
    Conflict,
    ConnectorHeld,
    DependencyUnavailable,
    InvalidRequest,
    NotFound,
    PaymentRequired,
    RateLimited,
    Unauthorized,
    UnlockRefused,
)
from cloud.invoices import router as invoices_api
from cloud.invoices.models import DocumentKind, Invoice
from cloud.payments import checkout, receipts
from cloud.payments.dummy import DummyProvider
from cloud.payments.schemas import CheckoutAnswer, WalkUpPayment
from cloud.schemas import PathId
from cloud.sessions import service as sessions
from cloud.sessions import ws
from cloud.sessions.models import ChargingSession
from cloud.sessions.schemas import UnlockOffline
from cloud.sessions.unlock import unlock
from cloud.settings import Environment
from cloud.web import qrview
from cloud.web.render import (
    STATIC_DIR,
    PageVisitor,
    Visitor,
    redirect,
    render,
    safe_next,
    signin_redirect,
)
from cloud.web.websession import SESSION_COOKIE, cookie_secure, resume, sign_in, sign_out

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=200)]
OptionalText = Annotated[str, Form(max_length=200)]
CsrfField = Annotated[str, Form(alias="csrf", max_length=128)]
#: A booking in these states can be paid (``POST /bookings/{id}/payment``'s rule).
PAYABLE = (BookingStatus.PENDING, BookingStatus.CONFIRMED)
#: Walk-up choices offered on the charger page (minutes; energies in kWh).
DURATIONS_MIN = (30, 60, 120, 180)
ENERGIES_KWH = (5, 10, 20, 30)


# --- helpers -------------------------------------------------------------------------------


def explain(visitor: Visitor, exc: CloudError) -> str:
    """What a driver reads for a refusal, in their language."""
    _ = visitor.gettext
    if isinstance(exc, ChargerOffline):
        return _("The charger is offline, so it cannot be unlocked from here.")
    if isinstance(exc, ChargerNoAnswer):
        return _("The charger did not answer in time. Try again in a moment.")
    if isinstance(exc, UnlockRefused):
        return _("The charger refused to start. Check that the cable is plugged in.")
    if isinstance(exc, ConnectorHeld):
        return _("This connector is booked by someone else right now.")
    if isinstance(exc, BookingNotActive):
        return _("This booking cannot start now.")
    if isinstance(exc, PaymentRequired):
        return _("Payment is needed first. If an earlier session left an amount due, pay it.")
    if isinstance(exc, RateLimited):
        return _("Too many attempts. Wait a few minutes and try again.")
    if isinstance(exc, Unauthorized):
        return _("That did not work: check what you typed.")
    if isinstance(exc, Conflict):
        return _("That is not possible right now: %(why)s") % {"why": str(exc)}
    if isinstance(exc, InvalidRequest):
        return _("Please check the form: %(why)s") % {"why": str(exc)}
    if isinstance(exc, DependencyUnavailable):
        return _("A service is unavailable. Try again in a moment.")
    return _("Something went wrong. Try again.")


def _not_found(request: Request, visitor: Visitor) -> HTMLResponse:
    return render(request, visitor, "not_found.html", status_code=404)


def _is_dummy(state: State) -> bool:
    return isinstance(state.payments, DummyProvider)


# --- the QR page -----------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    """Whether the client prefers HTML to JSON (a browser): ``text/html`` listed with a
    higher (or equal and earlier) q-value than ``application/json``. API clients sending
    nothing, ``*/*`` or ``application/json`` keep getting JSON."""
    best: dict[str, tuple[float, int]] = {}
    for index, part in enumerate(request.headers.get("accept", "").split(",")):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/json") and media not in best:
            best[media] = (q, -index)
    html = best.get("text/html")
    return html is not None and html[0] > 0 and html > best.get("application/json", (0.0, 0))


async def qr_page(request: Request, visitor: Visitor, db: AsyncSession, code: str) -> Response:
    """``GET /c/{code}`` for a browser: the charger, its live state, price and what to do.
    The listing is kept a few seconds, the live state read each time (cloud/web/qrview.py)."""
    try:
        found = await qrview.listing(db, request.app.state, code)
    except NotFound:
        return _not_found(request, visitor)
    state = visitor.state
    public = found.public
    status = await live_state(
        db,
        public.id,
        found.device_id,
        now=datetime.now(UTC),
        offline_after_s=state.settings.marketplace.device_offline_after_s,
        readings=False,
    )
    return render(
        request,
        visitor,
        "charger.html",
        charger=public,
        status=status,
        verified_host=public.verified_host,
        code=code,
        durations=DURATIONS_MIN,
        energies=ENERGIES_KWH,
        per_kwh=public.pricing.mode is PricingMode.PER_KWH,
    )


# --- sign in / sign up -----------------------------------------------------------------------


def _signed_in(visitor: Visitor, cookie: str, target: str) -> RedirectResponse:
    response = redirect(safe_next(target), visitor)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=visitor.state.settings.auth.refresh_ttl_s,
        httponly=True,
        secure=cookie_secure(visitor.state.settings),
        samesite="lax",
        path="/",
    )
    return response


def _signin_page(
    request: Request,
    visitor: Visitor,
    *,
    next_url: str,
    error: str | None = None,
    phone: str = "",
    code_sent: bool = False,
    email: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        visitor,
        "signin.html",
        status_code=status_code,
        next_url=safe_next(next_url),
        error=error,
        phone=phone,
        code_sent=code_sent,
        email=email,
    )


@router.get("/app/signin")
async def signin(
    request: Request,
    visitor: PageVisitor,
    next_url: Annotated[str, Query(alias="next", max_length=500)] = "/app",
) -> Response:
    if visitor.principal is not None:
        return redirect(safe_next(next_url), visitor)
    return _signin_page(request, visitor, next_url=next_url)


@router.post("/app/signin/otp")
async def signin_otp(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    phone: Text,
    csrf: CsrfField = "",
    next_url: Annotated[str, Form(alias="next", max_length=500)] = "/app",
) -> Response:
    """Text a one-time code to the number (the API's rule, rate limits and gateway)."""
    visitor.check_csrf(csrf)
    try:
        body = OtpRequest(phone=phone)
    except ValidationError:
        return _signin_page(
            request,
            visitor,
            next_url=next_url,
            phone=phone,
            status_code=422,
            error=visitor.gettext("Enter a 10-digit Indian mobile number."),
        )
    try:
        client = request.client.host if request.client else "unknown"
        await _limit(state, f"otp:ip:{client}", f"otp:id:{body.phone}")
        store = _otp_store(state)
        code = await store.issue(body.phone)
        await get_sms_sender(state).send(body.phone, otp_message(code, store.ttl_s))
    except CloudError as exc:
        code_status = 429 if isinstance(exc, RateLimited) else 503
        return _signin_page(
            request,
            visitor,
            next_url=next_url,
            phone=phone,
            status_code=code_status,
            error=explain(visitor, exc),
        )
    return _signin_page(request, visitor, next_url=next_url, phone=body.phone, code_sent=True)


@router.post("/app/signin/otp/verify")
async def signin_otp_verify(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    phone: Text,
    csrf: CsrfField = "",
    code: Annotated[str, Form(max_length=12)],
    name: Annotated[str, Form(max_length=120)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=500)] = "/app",
) -> Response:
    """The code proves the number: signs its owner in, or signs a new driver up."""
    visitor.check_csrf(csrf)
    client = request.client.host if request.client else "unknown"
    try:
        # The API's own body and its rules (phone normalised, code and name shapes).
        fields = {"phone": phone, "code": code.strip()}
        if name.strip():
            fields["name"] = name.strip()  # omitted, not null, as the API's body takes it
        body = OtpVerifyRequest.model_validate(fields)
        await _limit(state, f"otpv:ip:{client}", f"otpv:id:{body.phone}")
        if not await _otp_store(state).check(body.phone, body.code):
            raise Unauthorized("the code is wrong or has expired")
        async with state.sessions() as db, db.begin():
            tokens = await accounts.otp_login(
                db,
                state.settings,
                phone=body.phone,
                name=body.name,
                caller_id=None,
                now=datetime.now(UTC),
            )
    except ValidationError:
        bad_phone = visitor.gettext("Enter your mobile number and the 6-digit code.")
        return _signin_page(
            request, visitor, next_url=next_url, phone=phone, status_code=422, error=bad_phone
        )
    except CloudError as exc:
        return _signin_page(
            request,
            visitor,
            next_url=next_url,
            phone=phone,
            code_sent=True,
            status_code=401,
            error=explain(visitor, exc),
        )
    cookie, _session = await sign_in(state, tokens)
    return _signed_in(visitor, cookie, next_url)


@router.post("/app/signin/password")
async def signin_password(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    email: Text,
    csrf: CsrfField = "",
    password: Annotated[str, Form(max_length=200)],
    action: Annotated[Literal["signin", "signup"], Form()] = "signin",
    name: Annotated[str, Form(max_length=120)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=500)] = "/app",
) -> Response:
    """Email and password: sign in, or (``action=signup``) create a driver account."""
    visitor.check_csrf(csrf)
    client = request.client.host if request.client else "unknown"
    now = datetime.now(UTC)
    try:
        if action == "signup":
            body = RegisterRequest(email=email, password=password, name=name.strip())
            await _limit(state, f"register:ip:{client}")
            async with state.sessions() as db, db.begin():
                _me, tokens = await accounts.register(db, state.settings, body, now=now)
        else:
            # The API's own body: the email is normalised by its rule (cloud/accounts/schemas.py).
            asked = LoginRequest(email=email, password=password)
            await _limit(state, f"login:ip:{client}", f"login:id:{asked.email}")
            async with state.sessions() as db, db.begin():
                tokens = await accounts.login(
                    db,
                    state.settings,
                    email=asked.email,
                    phone=None,
                    password=asked.password,
                    now=now,
                )
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][-1]) for e in exc.errors() if e["loc"])
        return _signin_page(
            request,
            visitor,
            next_url=next_url,
            email=email,
            status_code=422,
            error=visitor.gettext(
                "Please check: %(fields)s (a password has at least 10 "
                "characters; a new account needs a name)."
            )
            % {"fields": fields},
        )
    except CloudError as exc:
        return _signin_page(
            request,
            visitor,
            next_url=next_url,
            email=email,
            status_code=401,
            error=explain(visitor, exc),
        )
    cookie, _session = await sign_in(state, tokens)
    return _signed_in(visitor, cookie, next_url)


@router.post("/app/signout")
async def signout(visitor: PageVisitor, state: State, csrf: CsrfField = "") -> Response:
    visitor.check_csrf(csrf)
    if visitor.session is not None:
        await sign_out(state, visitor.session)
    response = redirect("/app", visitor)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- home, my sessions, my bookings ----------------------------------------------------------


@router.get("/app")
async def home(request: Request, visitor: PageVisitor, db: Db) -> Response:
    recent = []
    if visitor.principal is not None:
        recent = await sessions.list_my_sessions(
            db, visitor.principal, limit=3, offset=0, now=datetime.now(UTC)
        )
    return render(request, visitor, "home.html", sessions=recent)


@router.get("/app/sessions")
async def my_sessions(
    request: Request,
    visitor: PageVisitor,
    db: Db,
    page: Annotated[int, Query(ge=1, le=1000)] = 1,
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    size = 20
    items = await sessions.list_my_sessions(
        db, visitor.principal, limit=size + 1, offset=(page - 1) * size, now=datetime.now(UTC)
    )
    return render(
        request,
        visitor,
        "sessions.html",
        sessions=items[:size],
        page=page,
        has_more=len(items) > size,
    )


@router.get("/app/bookings")
async def my_bookings(
    request: Request,
    visitor: PageVisitor,
    db: Db,
    page: Annotated[int, Query(ge=1, le=1000)] = 1,
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    size = 20
    found = await bookings.list_mine(
        db,
        visitor.principal.user_id,
        status=None,
        limit=size,
        offset=(page - 1) * size,
        now=datetime.now(UTC),
    )
    names = {}
    unpaid: dict[str, int] = {}
    for item in found.items:
        if item.charger_id not in names:
            charger = await db.get(Charger, item.charger_id)
            names[item.charger_id] = charger.name if charger else item.charger_id
        if item.status in PAYABLE and item.amount_paise > 0:
            row = await db.get(Booking, item.id)
            if row is not None:
                unpaid[item.id] = await checkout.booking_unpaid_paise(db, row)
    more = found.next_offset is not None
    return render(
        request,
        visitor,
        "bookings.html",
        bookings=found.items,
        names=names,
        page=page,
        has_more=more,
        now=datetime.now(UTC),
        unpaid=unpaid,
        paid="paid" in request.query_params,
    )


@router.post("/app/bookings/{booking_id}/pin")
async def booking_pin(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    state: State,
    booking_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    """The booking's keypad PIN, shown once (``POST /bookings/{id}/pin``'s service); the
    page's script keeps it on the phone for My bookings."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        shown = await bookings.reveal_pin(
            db,
            visitor.principal,
            booking_id,
            state.settings.app.secret_key.get_secret_value(),
            datetime.now(UTC),
        )
        booking = await bookings.get_booking(db, visitor.principal, booking_id, datetime.now(UTC))
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        return render(
            request,
            visitor,
            "message.html",
            status_code=409,
            title=visitor.gettext("No PIN"),
            error=explain(visitor, exc),
            back="/app/bookings",
        )
    return render(
        request,
        visitor,
        "pin.html",
        offline=False,
        booking_id=booking_id,
        pin=shown.pin,
        valid_from=shown.valid_from,
        valid_until=shown.valid_until,
        connector=booking.connector,
    )


@router.get("/sw.js")
async def service_worker() -> Response:
    """The service worker, from the root so that its scope is the whole site."""
    return FileResponse(
        STATIC_DIR / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )


# --- charge: quote, pay, unlock --------------------------------------------------------------


def _basis(duration_min: int | None, energy_wh: int | None) -> dict[str, int]:
    """The walk-up's one basis, as the API's bodies take it (an omitted field, not null)."""
    if duration_min is not None:
        return {"duration_min": duration_min}
    return {} if energy_wh is None else {"energy_wh": energy_wh}


async def _charger_or_none(db: AsyncSession, charger_id: str) -> Charger | None:
    try:
        return await access.public_charger(db, charger_id)
    except NotFound:
        return None


@router.get("/app/chargers/{charger_id}/quote")
async def quote_page(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    state: State,
    charger_id: PathId,
    connector: Annotated[int, Query(ge=1, le=32)] = 1,
    duration_min: Annotated[int | None, Query(ge=1, le=720)] = None,
    energy_kwh: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """The price of what the driver chose, GST line by line, and the pay form."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    charger = await _charger_or_none(db, charger_id)
    if charger is None:
        return _not_found(request, visitor)
    energy_wh = energy_kwh * 1000 if energy_kwh is not None else None
    if duration_min is None and energy_wh is None:
        duration_min = 60
    if duration_min is not None:
        energy_wh = None
    error = None
    priced = None
    try:
        asked = QuoteRequest.model_validate(
            {"charger_id": charger_id, "connector": connector, **_basis(duration_min, energy_wh)}
        )
        priced = await quote(db, visitor.principal, asked, now=datetime.now(UTC))
    except ValidationError:
        error = visitor.gettext("Choose a duration or an energy.")
    except CloudError as exc:
        error = explain(visitor, exc)
    public = await views.public_view(db, charger)
    return render(
        request,
        visitor,
        "quote.html",
        status_code=200 if priced else 422,
        charger=public,
        quote=priced,
        error=error,
        connector=connector,
        duration_min=duration_min,
        energy_wh=energy_wh,
        dummy=_is_dummy(state),
        test_card=state.settings.app.env in (Environment.DEVELOPMENT, Environment.TEST),
    )


async def _start(
    request: Request,
    visitor: Visitor,
    state: State,
    *,
    charger_id: str,
    connector: int,
    booking_id: str | None,
) -> Response:
    """Unlock, then the live page (started), the PIN page (offline, booked) or why not."""
    assert visitor.principal is not None
    try:
        answer = await unlock(
            state,
            visitor.principal,
            charger_id=charger_id,
            connector_number=connector,
            booking_id=booking_id,
            now=datetime.now(UTC),
        )
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        pin = exc.pin if isinstance(exc, ChargerNoAnswer) else None
        return render(
            request,
            visitor,
            "unlock_failed.html",
            status_code=409,
            error=explain(visitor, exc),
            charger_id=charger_id,
            connector=connector,
            booking_id=booking_id,
            pin=pin,
        )
    if isinstance(answer, UnlockOffline):
        return render(
            request,
            visitor,
            "pin.html",
            offline=True,
            booking_id=answer.booking_id,
            pin=answer.pin,
            valid_from=answer.pin_valid_from,
            valid_until=answer.pin_valid_until,
            connector=answer.connector,
        )
    return redirect(f"/app/sessions/{answer.session_id}", visitor)


@router.post("/app/chargers/{charger_id}/pay")
async def pay(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    connector: Annotated[int, Form(ge=1, le=32)],
    card_number: Annotated[str, Form(max_length=23)],
    duration_min: Annotated[int | None, Form(ge=1, le=720)] = None,
    energy_wh: Annotated[int | None, Form(ge=1, le=500_000)] = None,
) -> Response:
    """Pay the walk-up with the provider's checkout (the dummy's card form in development),
    then unlock at once: a paid driver is charging without another tap."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    principal = visitor.principal
    try:
        body = WalkUpPayment.model_validate(
            {"charger_id": charger_id, "connector": connector, **_basis(duration_min, energy_wh)}
        )
        order = await checkout.pay_walkup(state, principal, body, now=datetime.now(UTC))
        answer = CheckoutAnswer(card_number=card_number)
        await checkout.verify(state, principal, order.id, answer)
    except NotFound:
        return _not_found(request, visitor)
    except ValidationError:
        return render(
            request,
            visitor,
            "unlock_failed.html",
            status_code=422,
            error=visitor.gettext("Enter the card number (digits and spaces)."),
            charger_id=charger_id,
            connector=connector,
            booking_id=None,
            pin=None,
            paid=False,
        )
    except CloudError as exc:
        error = explain(visitor, exc)
        if isinstance(exc, PaymentRequired):
            error = visitor.gettext("The card was declined. Nothing was charged.")
        return render(
            request,
            visitor,
            "unlock_failed.html",
            status_code=402,
            error=error,
            charger_id=charger_id,
            connector=connector,
            booking_id=None,
            pin=None,
            paid=False,
        )
    log.info("web walk-up paid", extra={"payment_id": order.id, "user_id": principal.user_id})
    return await _start(
        request, visitor, state, charger_id=charger_id, connector=connector, booking_id=None
    )


@router.post("/app/chargers/{charger_id}/unlock")
async def unlock_page(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    connector: Annotated[int, Form(ge=1, le=32)],
    booking_id: Annotated[str | None, Form(max_length=26, pattern=r"^[0-9A-Za-z]+$")] = None,
) -> Response:
    """Unlock again after a failure (the payment is still held), or start a booking."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    return await _start(
        request,
        visitor,
        state,
        charger_id=charger_id,
        connector=connector,
        booking_id=booking_id or None,
    )


# --- the live session, stop, receipt, invoice ------------------------------------------------


@router.get("/app/sessions/{session_id}")
async def session_page(
    request: Request, visitor: PageVisitor, db: Db, session_id: PathId
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        view = await sessions.load_view(db, visitor.principal, session_id)
    except NotFound:
        return _not_found(request, visitor)
    out = sessions.session_out(view, datetime.now(UTC))
    return render(request, visitor, "session.html", session=out, charger=view.charger)


@router.post("/app/sessions/{session_id}/stop")
async def stop(
    request: Request, visitor: PageVisitor, state: State, session_id: PathId, csrf: CsrfField = ""
) -> Response:
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        await sessions.stop_session(state, visitor.principal, session_id, datetime.now(UTC))
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        if not (isinstance(exc, Conflict) and "already stopped" in str(exc)):
            return render(
                request,
                visitor,
                "message.html",
                status_code=409,
                title=visitor.gettext("Could not stop"),
                error=explain(visitor, exc),
                back=f"/app/sessions/{session_id}",
            )
    return redirect(f"/app/sessions/{session_id}", visitor)


@router.get("/app/sessions/{session_id}/receipt")
async def receipt_page(
    request: Request, visitor: PageVisitor, db: Db, state: State, session_id: PathId
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        found = await receipts.receipt(db, visitor.principal, session_id, state.settings.billing)
    except NotFound:
        return _not_found(request, visitor)
    except Conflict:
        return redirect(f"/app/sessions/{session_id}", visitor)
    invoice_id = await db.scalar(
        select(Invoice.id)
        .join(ChargingSession, ChargingSession.id == Invoice.session_id)
        .where(
            ChargingSession.device_session_id == session_id,
            Invoice.kind == DocumentKind.INVOICE,
            Invoice.driver_id == visitor.principal.user_id,
        )
    )
    charger = await db.get(Charger, found.charger_id) if found.charger_id else None
    return render(
        request, visitor, "receipt.html", receipt=found, invoice_id=invoice_id, charger=charger
    )


@router.get("/app/invoices/{invoice_id}.pdf")
async def invoice_pdf(
    request: Request, visitor: PageVisitor, db: Db, invoice_id: PathId
) -> Response:
    """The invoice PDF for a signed-in browser (the API route's own answer)."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        return await invoices_api.get_invoice_pdf(invoice_id, db, visitor.principal)
    except NotFound:
        return _not_found(request, visitor)


@router.websocket("/app/sessions/{session_id}/live")
async def session_live(websocket: WebSocket, session_id: PathId) -> None:
    """The live session stream for a signed-in browser: the same stream as
    ``/ws/sessions/{id}``, authenticated by the session cookie (with the stored access
    token). Only same-origin pages may open it (a cookie rides along on a cross-site
    WebSocket too: the Origin check stops cross-site WebSocket hijacking)."""
    same_origin, token = await page_socket_token(websocket)
    if same_origin:
        await ws.stream_session(websocket, session_id, token=token)


async def page_socket_token(websocket: WebSocket) -> tuple[bool, str | None]:
    """For a page's WebSocket: (False, None) once a cross-origin socket is closed 4403;
    otherwise True and the access token of the browser's web session (None without one: the
    stream then asks for a token the usual way)."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    if origin is not None and origin.split("://", 1)[-1] != host:
        await websocket.accept()
        await websocket.close(ws.CLOSE_FORBIDDEN, "cross-origin")
        return False, None
    cookie = websocket.cookies.get(SESSION_COOKIE)
    if not cookie:
        return True, None
    try:
        resumed = await resume(websocket.app.state.cloud, cookie)
    except CloudError:
        resumed = None
    return True, None if resumed is None else resumed[1].access_token
