"""The driver's pages after the charge: amounts due, reviews, disputes (with photos), and
paying on the pages with the configured provider's own Checkout.

Every route calls the service its JSON twin calls: ``cloud/payments/checkout.py``
(``pay_walkup``, ``pay_due``, ``verify`` — the ``POST /payments/{id}/verify`` rule: a Razorpay
signature is checked against the order id *we* stored, never the one the browser posts),
``cloud/reviews/service.py`` (``create_review``: a completed session of yours, within 30
days, once) and ``cloud/disputes/service.py`` (``open_dispute``, ``add_photo``: the image
checks and the 5-photo limit). Someone else's session or dispute is a 404 page, as in the API.

Checkout (``POST /app/chargers/{id}/checkout``, ``POST /app/due/pay``) opens the order and
renders ``checkout.html`` for the provider in the settings: Razorpay's ``checkout.js`` (the
only external script any page loads; that page's Content-Security-Policy adds exactly it and
the frame it opens), Stripe's Payment Element (with a publishable key), or the dummy's test
card and UPI link in development. ``static/pay.js`` hands Checkout's answer to a plain form
that posts it, with the CSRF token, to ``POST /app/payments/{id}/verify``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from cloud.accounts.models import Role
from cloud.chargers import access
from cloud.chargers import router as chargers_api
from cloud.deps import Db, State
from cloud.disputes import router as disputes_api
from cloud.disputes import rules as dispute_rules
from cloud.disputes import service as disputes
from cloud.disputes.models import DisputeReason
from cloud.disputes.schemas import DisputeIn
from cloud.errors import (
    CloudError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PaymentRequired,
    SignatureInvalid,
)
from cloud.payments import checkout
from cloud.payments.schemas import CheckoutAnswer, OrderOut, WalkUpPayment
from cloud.reviews import service as reviews
from cloud.reviews.schemas import ReviewIn
from cloud.schemas import PathId
from cloud.sessions import service as sessions
from cloud.settings import Environment, PaymentProviderName
from cloud.web.render import PageVisitor, Visitor, redirect, render, signin_redirect
from cloud.web.router import CsrfField, _basis, _start, explain
from cloud.web.security import content_security_policy

router = APIRouter(include_in_schema=False)

#: What each provider's checkout page may load besides this origin: exactly its own script
#: and the frames and API it talks to. The dummy needs nothing.
PROVIDER_SOURCES: dict[PaymentProviderName, dict[str, tuple[str, ...]]] = {
    PaymentProviderName.RAZORPAY: {
        "scripts": ("https://checkout.razorpay.com/v1/checkout.js",),
        "frames": ("https://api.razorpay.com",),
        "connections": ("https://api.razorpay.com", "https://lumberjack.razorpay.com"),
    },
    PaymentProviderName.STRIPE: {
        "scripts": ("https://js.stripe.com/v3/",),
        "frames": ("https://js.stripe.com", "https://hooks.stripe.com"),
        "connections": ("https://api.stripe.com",),
    },
}
#: A form's own fields besides the photos (csrf, reason_code, description).
DISPUTE_FIELDS = 3


def _for_drivers(request: Request, visitor: Visitor) -> HTMLResponse:
    """The API's ``require_roles(Role.DRIVER)`` on these actions, as a page."""
    return render(
        request,
        visitor,
        "message.html",
        status_code=403,
        title=visitor.gettext("For drivers"),
        back="/app",
        error=visitor.gettext("Paying, reviewing and disputes are for driver accounts."),
    )


def _not_found(request: Request, visitor: Visitor) -> HTMLResponse:
    return render(request, visitor, "not_found.html", status_code=404)


def _message(  # noqa: PLR0917 -- the page's parts, in reading order
    request: Request, visitor: Visitor, status: int, title: str, error: str, back: str
) -> HTMLResponse:
    return render(
        request, visitor, "message.html", status_code=status, title=title, error=error, back=back
    )


# --- a charger by id (the search list's links) -----------------------------------------------


@router.get("/app/chargers/{charger_id}")
async def charger_by_id(
    request: Request, visitor: PageVisitor, db: Db, charger_id: PathId
) -> Response:
    """To the charger's page, ``/c/{code}`` (the QR target; one page per charger)."""
    try:
        charger = await access.public_charger(db, charger_id)
    except NotFound:
        return _not_found(request, visitor)
    return redirect(f"/c/{charger.qr_code}", visitor)


# --- checkout --------------------------------------------------------------------------------


def _checkout_page(
    request: Request,
    visitor: Visitor,
    state: State,
    order: OrderOut,
    *,
    title: str,
    charger_id: str | None = None,
    connector: int | None = None,
    back: str,
    booking_id: str | None = None,
) -> HTMLResponse:
    """The provider's checkout for an open order; its answer posts to the verify route."""
    payments = state.settings.payments
    provider = payments.provider
    if provider is PaymentProviderName.STRIPE and not payments.stripe_publishable_key:
        return _message(
            request,
            visitor,
            503,
            visitor.gettext("Payment"),
            visitor.gettext(
                "Paying by card on these pages is not set up yet. Use the app, or try later."
            ),
            back,
        )
    response = render(
        request,
        visitor,
        "checkout.html",
        order=order,
        provider=provider.value,
        title=title,
        charger_id=charger_id,
        connector=connector,
        back=back,
        booking_id=booking_id,
        stripe_key=payments.stripe_publishable_key,
        test_card=state.settings.app.env in (Environment.DEVELOPMENT, Environment.TEST),
    )
    sources = PROVIDER_SOURCES.get(provider)
    if sources is not None:
        response.headers["Content-Security-Policy"] = content_security_policy(**sources)
    return response


@router.post("/app/chargers/{charger_id}/checkout")
async def walkup_checkout(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    connector: Annotated[int, Form(ge=1, le=32)],
    duration_min: Annotated[int | None, Form(ge=1, le=720)] = None,
    energy_wh: Annotated[int | None, Form(ge=1, le=500_000)] = None,
) -> Response:
    """Open the walk-up payment (``POST /payments``'s service) and show the checkout."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.DRIVER):
        return _for_drivers(request, visitor)
    back = f"/app/chargers/{charger_id}/quote?connector={connector}"
    try:
        body = WalkUpPayment.model_validate(
            {"charger_id": charger_id, "connector": connector, **_basis(duration_min, energy_wh)}
        )
        order = await checkout.pay_walkup(state, visitor.principal, body, now=datetime.now(UTC))
    except NotFound:
        return _not_found(request, visitor)
    except ValidationError:
        return _message(
            request,
            visitor,
            422,
            visitor.gettext("Payment"),
            visitor.gettext("Choose a duration or an energy."),
            back,
        )
    except CloudError as exc:
        status = 402 if isinstance(exc, PaymentRequired) else 409
        return _message(
            request, visitor, status, visitor.gettext("Payment"), explain(visitor, exc), back
        )
    return _checkout_page(
        request,
        visitor,
        state,
        order,
        title=visitor.gettext("Pay and start"),
        charger_id=charger_id,
        connector=connector,
        back=back,
    )


@router.post("/app/payments/{payment_id}/verify")
async def verify_payment(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    payment_id: PathId,
    csrf: CsrfField = "",
    razorpay_payment_id: Annotated[str, Form(max_length=64)] = "",
    razorpay_order_id: Annotated[str, Form(max_length=64)] = "",
    razorpay_signature: Annotated[str, Form(max_length=256)] = "",
    payment_intent: Annotated[str, Form(max_length=64)] = "",
    card_number: Annotated[str, Form(max_length=23)] = "",
    charger_id: Annotated[str, Form(max_length=26)] = "",
    connector: Annotated[int | None, Form(ge=1, le=32)] = None,
    booking_id: Annotated[str, Form(max_length=26)] = "",
) -> Response:
    """Checkout's answer for the caller's payment, as ``POST /payments/{id}/verify`` takes it:
    Razorpay's handler fields (``razorpay_order_id`` is not trusted: the signature is checked
    against the order id stored with the payment), Stripe's PaymentIntent id (its state is
    read from Stripe), or the dummy's test card. Paid: a walk-up unlocks at once, an amount
    due goes back to its page."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.DRIVER):
        return _for_drivers(request, visitor)
    back = (
        f"/app/chargers/{charger_id}/quote"
        if charger_id
        else "/app/bookings"
        if booking_id
        else "/app/due"
    )
    answer: dict[str, Any]
    if razorpay_payment_id or razorpay_signature:
        answer = {"provider_payment_id": razorpay_payment_id, "signature": razorpay_signature}
    elif payment_intent:
        # Stripe hands back the PaymentIntent unsigned; the provider reads its state.
        answer = {"provider_payment_id": payment_intent, "signature": payment_intent}
    else:
        answer = {"card_number": card_number}
    try:
        body = CheckoutAnswer.model_validate(answer)
        await checkout.verify(state, visitor.principal, payment_id, body)
    except NotFound:
        return _not_found(request, visitor)
    except ValidationError:
        return _message(
            request,
            visitor,
            422,
            visitor.gettext("Payment"),
            visitor.gettext("The payment's answer was incomplete. Nothing was charged: try again."),
            back,
        )
    except CloudError as exc:
        if isinstance(exc, PaymentRequired):
            error = visitor.gettext("The card was declined. Nothing was charged.")
            status = 402
        elif isinstance(exc, SignatureInvalid):
            error = visitor.gettext("The payment could not be confirmed. Nothing was charged.")
            status = 400
        else:
            error, status = explain(visitor, exc), 409
        return _message(request, visitor, status, visitor.gettext("Payment"), error, back)
    if charger_id and connector is not None:
        return await _start(
            request, visitor, state, charger_id=charger_id, connector=connector, booking_id=None
        )
    if booking_id:
        return redirect("/app/bookings?paid=1", visitor)
    return redirect("/app/due?paid=1", visitor)


@router.post("/app/bookings/{booking_id}/pay")
async def pay_booking(
    request: Request, visitor: PageVisitor, state: State, booking_id: PathId, csrf: CsrfField = ""
) -> Response:
    """Open the booking's prepayment (``POST /bookings/{id}/payment``'s service: what is left
    to pay of its amount) and show the checkout; paid, back to My bookings."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.DRIVER):
        return _for_drivers(request, visitor)
    try:
        order = await checkout.pay_booking(state, visitor.principal, booking_id)
    except NotFound:
        return _not_found(request, visitor)
    except CloudError as exc:
        return _message(
            request,
            visitor,
            409,
            visitor.gettext("Payment"),
            explain(visitor, exc),
            "/app/bookings",
        )
    title = visitor.gettext("Pay for the booking")
    return _checkout_page(
        request, visitor, state, order, title=title, back="/app/bookings", booking_id=booking_id
    )


# --- amounts due -----------------------------------------------------------------------------


@router.get("/app/due")
async def amounts_due(request: Request, visitor: PageVisitor, db: Db) -> Response:
    """What the driver owes (a bill beyond its prepayment) and the button to pay it."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    due = await checkout.amount_due(db, visitor.principal.user_id)
    payments = await checkout.list_payments(db, visitor.principal, limit=10, offset=0)
    return render(
        request,
        visitor,
        "due.html",
        due=due,
        payments=payments,
        paid="paid" in request.query_params,
    )


@router.post("/app/due/pay")
async def pay_due(
    request: Request, visitor: PageVisitor, state: State, csrf: CsrfField = ""
) -> Response:
    """Open the payment of the amount due (``POST /amount-due/payment``'s service)."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.DRIVER):
        return _for_drivers(request, visitor)
    try:
        order = await checkout.pay_due(state, visitor.principal)
    except CloudError as exc:
        return _message(
            request, visitor, 409, visitor.gettext("Amount due"), explain(visitor, exc), "/app/due"
        )
    title = visitor.gettext("Pay the amount due")
    return _checkout_page(request, visitor, state, order, title=title, back="/app/due")


# --- review ----------------------------------------------------------------------------------


async def _mine(db: Db, visitor: Visitor, session_id: str) -> bool:
    """Whether the session is the visitor's (the sessions service's scoping rule)."""
    assert visitor.principal is not None
    try:
        await sessions.load_view(db, visitor.principal, session_id)
    except NotFound:
        return False
    return True


@router.get("/app/sessions/{session_id}/review")
async def review_form(
    request: Request, visitor: PageVisitor, db: Db, session_id: PathId
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not await _mine(db, visitor, session_id):
        return _not_found(request, visitor)
    return render(
        request, visitor, "review.html", session_id=session_id, rating=None, text="", error=None
    )


@router.post("/app/sessions/{session_id}/review")
async def review_post(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    session_id: PathId,
    csrf: CsrfField = "",
    rating: Annotated[str, Form(max_length=2)] = "",
    text: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """``POST /sessions/{id}/review``'s service: one review of a completed session."""
    visitor.check_csrf(csrf)
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.DRIVER):
        return _for_drivers(request, visitor)
    _ = visitor.gettext
    stars = int(rating) if rating.isdigit() else None
    try:
        body = ReviewIn.model_validate({"rating": stars, "text": text})
        await reviews.create_review(
            db,
            visitor.principal,
            session_id,
            rating=body.rating,
            body=body.text.strip(),
            now=datetime.now(UTC),
        )
    except ValidationError as exc:
        wrong = {str(e["loc"][-1]) for e in exc.errors() if e["loc"]}
        error = (
            _("Choose from 1 to 5 stars.")
            if "rating" in wrong
            else _("The review is too long or has characters it cannot hold.")
        )
        return render(
            request,
            visitor,
            "review.html",
            status_code=422,
            session_id=session_id,
            rating=stars,
            text=text,
            error=error,
        )
    except (Forbidden, NotFound):
        return _message(
            request,
            visitor,
            403,
            _("Review"),
            _("Only a completed session of yours, stopped in the last 30 days, can be reviewed."),
            "/app/sessions",
        )
    except Conflict:
        return _message(
            request,
            visitor,
            409,
            _("Review"),
            _("You have reviewed this session already."),
            "/app/sessions",
        )
    return redirect(f"/app/sessions/{session_id}/receipt?reviewed=1", visitor)


# --- disputes --------------------------------------------------------------------------------


@router.get("/app/disputes")
async def my_disputes(request: Request, visitor: PageVisitor, db: Db) -> Response:
    """Disputes the driver opened (and, for a host, those on their chargers), newest first."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    rows = await disputes.list_disputes(db, visitor.principal, status=None, limit=50, offset=0)
    items = [await disputes_api.dispute_out(db, d) for d in rows]
    return render(
        request, visitor, "disputes.html", disputes=items, opened=request.query_params.get("opened")
    )


@router.get("/app/disputes/{dispute_id}/photos/{photo_id}")
async def dispute_photo(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    state: State,
    dispute_id: PathId,
    photo_id: PathId,
) -> Response:
    """A photo of a dispute the visitor may see (its driver, the charger's host, an admin)."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    try:
        photo = await disputes.find_photo(db, visitor.principal, dispute_id, photo_id)
    except (NotFound, Forbidden):
        return _not_found(request, visitor)
    data = await chargers_api.photo_storage(state).get(photo.storage_key)
    return Response(
        data,
        media_type=photo.content_type,
        headers={
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )


def _dispute_form(
    request: Request,
    visitor: Visitor,
    session_id: str,
    *,
    status: int = 200,
    reason: str = "",
    description: str = "",
    error: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        visitor,
        "dispute.html",
        status_code=status,
        session_id=session_id,
        reasons=[r.value for r in DisputeReason],
        reason=reason,
        description=description,
        error=error,
        max_photos=dispute_rules.MAX_PHOTOS,
    )


@router.get("/app/sessions/{session_id}/dispute")
async def dispute_form(
    request: Request, visitor: PageVisitor, db: Db, session_id: PathId
) -> Response:
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not await _mine(db, visitor, session_id):
        return _not_found(request, visitor)
    return _dispute_form(request, visitor, session_id)


@router.post("/app/sessions/{session_id}/dispute")
async def dispute_post(
    request: Request, visitor: PageVisitor, db: Db, state: State, session_id: PathId
) -> Response:
    """Open a dispute (``POST /sessions/{id}/disputes``'s service) with up to 5 photos
    (``POST /disputes/{id}/photos``'s), all or nothing: a refused photo rolls the dispute
    back and the form says why. The multipart body is bounded before it is read."""
    _ = visitor.gettext
    photo_max = state.settings.marketplace.photo_max_bytes
    body_max = dispute_rules.MAX_PHOTOS * photo_max + chargers_api.MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_max:
        return _dispute_form(
            request, visitor, session_id, status=413, error=_("The photos are too large together.")
        )
    try:
        bounded = chargers_api._bounded(request, body_max, photo_max)
        async with bounded.form(
            max_files=dispute_rules.MAX_PHOTOS, max_fields=DISPUTE_FIELDS
        ) as form:
            token = form.get("csrf")
            visitor.check_csrf(token if isinstance(token, str) else None)
            if visitor.principal is None:
                return signin_redirect(request, visitor)
            if not visitor.principal.has(Role.DRIVER):
                return _for_drivers(request, visitor)
            reason = str(form.get("reason_code") or "")
            description = str(form.get("description") or "")
            uploads = [
                f for f in form.getlist("photos") if isinstance(f, UploadFile) and f.filename
            ]
            photos = [await f.read(photo_max + 1) for f in uploads]
    except (MultiPartException, InvalidRequest):
        return _dispute_form(
            request,
            visitor,
            session_id,
            status=413,
            error=_("The form could not be read: at most %(n)d photos, each at most %(mb)d MB.")
            % {"n": dispute_rules.MAX_PHOTOS, "mb": photo_max // (1024 * 1024)},
        )
    kept = {"reason": reason, "description": description}
    try:
        asked = DisputeIn.model_validate({"reason_code": reason, "description": description})
    except ValidationError:
        return _dispute_form(
            request,
            visitor,
            session_id,
            status=422,
            **kept,
            error=_("Choose what went wrong and describe it."),
        )
    storage = chargers_api.photo_storage(state)
    try:
        dispute = await disputes.open_dispute(
            db,
            visitor.principal,
            session_id,
            reason=asked.reason_code,
            description=asked.description.strip(),
            now=datetime.now(UTC),
        )
        for data in photos:
            await disputes.add_photo(
                db, storage, visitor.principal, dispute.id, data, max_bytes=photo_max
            )
    except (Forbidden, NotFound):
        await db.rollback()
        return _message(
            request,
            visitor,
            403,
            _("Report a problem"),
            _("Only a completed session of yours, stopped in the last 14 days, can be disputed."),
            "/app/sessions",
        )
    except Conflict:
        await db.rollback()
        return _message(
            request,
            visitor,
            409,
            _("Report a problem"),
            _("This session has a dispute already."),
            "/app/disputes",
        )
    except InvalidRequest as exc:
        await db.rollback()
        return _dispute_form(
            request,
            visitor,
            session_id,
            status=422,
            **kept,
            error=_("A photo was refused (%(why)s): nothing was sent. Choose the photos again.")
            % {"why": exc},
        )
    return redirect(f"/app/disputes?opened={dispute.id}", visitor)
