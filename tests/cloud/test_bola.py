"""The BOLA matrix: nobody reaches another user's objects, and roles gate their routes.

World: host B owns a charger (not yet approved), its device, a connector, a photo and a
blocked period; driver B has a booking and a session on it. Host A, driver A and a
technician are the intruders. Every route that takes an id in its path, or needs a signed-in
caller, must have a row in :data:`MATRIX` (``test_every_guarded_route_is_in_the_matrix``
fails otherwise, so a new route cannot escape it); each row is called as each intruder on
B's objects and must answer 403 or 404 (WebSockets: close code 4403, or 4401).

Payouts: host B also has a pending payout; the host routes take the host from the token
(tests/cloud/test_payouts.py checks that A's answers hold only A's money), the admin ones
need the admin role.

Reviews and disputes: driver B has reviewed B's charger and opened a dispute (with a photo)
on B's session; a driver sees only their disputes, a host only disputes on their chargers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.ids import new_ulid
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration

DENIED = frozenset({403, 404})
#: Ids the intruders aim at, filled into the path templates.
IDS = (
    "charger_id",
    "device_id",
    "booking_id",
    "session_id",
    "photo_id",
    "period_id",
    "code",
    "invoice_id",
    "payout_id",
    "payment_id",
    "submission_id",
    "kind",
    "subscription_id",
    "review_id",
    "dispute_id",
    "user_id",
)


@dataclass(frozen=True, slots=True)
class Row:
    """Who tries (``as_``: intruder names) and what they must get."""

    as_: tuple[str, ...]
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None
    #: A form body (the pages' POST routes), sent instead of ``body``.
    form: dict[str, str] | None = None
    expect: frozenset[int] = DENIED
    #: For list routes: B's ids that must not appear in the answer (status must be 200).
    excludes: tuple[str, ...] = ()


_SOON = datetime.now(UTC) + timedelta(days=3)
_PERIOD = {"start": _SOON.isoformat(), "end": (_SOON + timedelta(hours=1)).isoformat()}
_WINDOWS = {"windows": [{"weekday": 0, "opens_at": "08:00", "closes_at": "20:00"}]}
_TELEMETRY = {
    "from": (_SOON - timedelta(days=4)).isoformat(),
    "to": (_SOON - timedelta(days=3)).isoformat(),
}
_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
_HOSTS = ("host_a", "driver_a", "technician")
_DRIVERS = ("driver_a", "host_a", "technician")
_ADMIN_ONLY = ("host_b", "driver_a", "technician")

#: (method, path template) → the row. ``WS`` rows are WebSocket routes.
MATRIX: dict[tuple[str, str], Row] = {
    # Devices: the owning host or an admin.
    ("POST", "/chargers/{charger_id}/pairing-code"): Row(_HOSTS),
    ("POST", "/devices/{device_id}/revoke"): Row(_HOSTS),
    # listings: B's charger is not approved yet, so even its public views are hidden
    ("GET", "/chargers/{charger_id}"): Row(_DRIVERS),
    ("GET", "/c/{code}"): Row(_DRIVERS),
    ("GET", "/chargers/{charger_id}/qr.svg"): Row(_DRIVERS),
    ("GET", "/chargers/{charger_id}/qr.png"): Row(_DRIVERS),
    ("GET", "/chargers/{charger_id}/photos/{photo_id}"): Row(_DRIVERS),
    ("PATCH", "/chargers/{charger_id}"): Row(_HOSTS, body={"name": "Mine now"}),
    ("GET", "/host/chargers/{charger_id}"): Row(_HOSTS),
    ("PUT", "/chargers/{charger_id}/availability"): Row(_HOSTS, body=_WINDOWS),
    ("POST", "/chargers/{charger_id}/blocked-periods"): Row(_HOSTS, body=_PERIOD),
    ("DELETE", "/chargers/{charger_id}/blocked-periods/{period_id}"): Row(_HOSTS),
    ("POST", "/chargers/{charger_id}/photos"): Row(
        _HOSTS, files={"photo": ("p.png", _PNG, "image/png")}
    ),
    ("DELETE", "/chargers/{charger_id}/photos/{photo_id}"): Row(_HOSTS),
    ("GET", "/chargers/{charger_id}/telemetry"): Row(_HOSTS, query=_TELEMETRY),
    # moderation: admins only, not even the owner
    ("POST", "/admin/chargers/{charger_id}/approve"): Row(_ADMIN_ONLY),
    ("POST", "/admin/chargers/{charger_id}/reject"): Row(_ADMIN_ONLY, body={"note": "spam"}),
    ("POST", "/admin/chargers/{charger_id}/suspend"): Row(_ADMIN_ONLY, body={"note": "x"}),
    ("GET", "/admin/chargers"): Row(("host_b", "driver_a", "technician"), expect=frozenset({403})),
    # host-only collections and creation
    ("POST", "/chargers"): Row(("driver_a", "technician"), body={}, expect=frozenset({403})),
    ("GET", "/host/chargers"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("GET", "/host/bookings"): Row(("driver_a", "technician"), expect=frozenset({403})),
    # bookings
    ("GET", "/bookings/{booking_id}"): Row(_DRIVERS),
    ("POST", "/bookings/{booking_id}/cancel"): Row(_DRIVERS),
    ("POST", "/bookings/{booking_id}/pin"): Row(_DRIVERS),
    ("POST", "/bookings/{booking_id}/extend"): Row(_DRIVERS, body={"end": "2030-01-01T10:00:00Z"}),
    ("POST", "/bookings/{booking_id}/approve"): Row(_HOSTS),
    ("POST", "/bookings/{booking_id}/decline"): Row(_HOSTS),
    ("POST", "/bookings"): Row(("technician",), body={}, expect=frozenset({403})),
    ("GET", "/bookings"): Row(("driver_a", "host_a"), excludes=("booking_id",)),
    # sessions
    ("POST", "/chargers/{charger_id}/sessions"): Row(_DRIVERS, body={"connector": 1}),
    ("POST", "/sessions/{session_id}/stop"): Row(_DRIVERS),
    ("GET", "/sessions/{session_id}"): Row(_DRIVERS),
    ("GET", "/sessions"): Row(("driver_a", "host_a"), excludes=("session_id",)),
    # invoices: driver B's (the recipient) and host B's (their charger's session) only
    ("GET", "/invoices/{invoice_id}"): Row(_DRIVERS),
    ("GET", "/invoices/{invoice_id}.pdf"): Row(_DRIVERS),
    ("GET", "/invoices"): Row(("driver_a", "host_a"), excludes=("invoice_id",)),
    # a host's GST registration: the caller's own host row (no id to aim at); hosts only
    ("GET", "/host/gst-registration"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("PUT", "/host/gst-registration"): Row(
        ("driver_a", "technician"),
        body={"gstin": "29AABCC1234D1Z7", "legal_name": "X", "address": "Y", "pincode": "560025"},
        expect=frozenset({403}),
    ),
    ("DELETE", "/host/gst-registration"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("WS", "/ws/sessions/{session_id}"): Row(_DRIVERS),
    ("WS", "/ws/chargers/{charger_id}"): Row(_DRIVERS),
    # quotes: the id is in the body ("{charger_id}" is filled in like a path's); B's charger
    # is not approved, so only host B (and admins) may price it
    ("POST", "/quotes"): Row(
        _DRIVERS, body={"charger_id": "{charger_id}", "connector": 1, "duration_min": 60}
    ),
    # payments: a driver's own only (driver B has one for the booking); a walk-up payment
    # prices B's charger, which is not approved: the quote's 404
    ("POST", "/bookings/{booking_id}/payment"): Row(_DRIVERS),
    ("POST", "/payments"): Row(
        _DRIVERS, body={"charger_id": "{charger_id}", "connector": 1, "duration_min": 60}
    ),
    ("POST", "/amount-due/payment"): Row(("host_a", "technician"), expect=frozenset({403})),
    ("POST", "/payments/{payment_id}/verify"): Row(
        _DRIVERS, body={"card_number": "4111111111111111"}
    ),
    ("GET", "/payments/{payment_id}"): Row(_DRIVERS),
    ("GET", "/payments"): Row(("driver_a", "host_a"), excludes=("payment_id",)),
    ("GET", "/sessions/{session_id}/receipt"): Row(_DRIVERS),
    # payouts: the host is the caller's own (from the token); admins decide and see payments
    ("GET", "/host/earnings"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("GET", "/host/payouts"): Row(("host_a",), excludes=("payout_id",)),
    ("POST", "/host/payouts"): Row(("driver_a", "technician"), body={}, expect=frozenset({403})),
    ("PUT", "/host/payout-settings"): Row(
        ("driver_a", "technician"), body={"weekly_payouts": True}, expect=frozenset({403})
    ),
    ("GET", "/host/payout-account"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("PUT", "/host/payout-account"): Row(
        ("driver_a", "technician"),
        body={"kind": "vpa", "holder_name": "Asha Rao", "vpa": "asha@okhdfc"},
        expect=frozenset({403}),
    ),
    ("GET", "/admin/payouts"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/admin/payouts/{payout_id}/approve"): Row(_ADMIN_ONLY),
    ("POST", "/admin/payouts/{payout_id}/reject"): Row(_ADMIN_ONLY, body={"reason": "no"}),
    ("GET", "/admin/payments"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    # KYC: the host's own (from the token), hosts only; the queue and decisions admins only
    ("POST", "/host/kyc"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("GET", "/host/kyc"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("GET", "/admin/kyc"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("GET", "/admin/kyc/{submission_id}"): Row(_ADMIN_ONLY),
    ("GET", "/admin/kyc/{submission_id}/documents/{kind}"): Row(_ADMIN_ONLY),
    ("POST", "/admin/kyc/{submission_id}/verify"): Row(_ADMIN_ONLY),
    ("POST", "/admin/kyc/{submission_id}/reject"): Row(_ADMIN_ONLY, body={"reason": "no"}),
    # the admin console: users and figures, admins only (driver B is the target)
    ("GET", "/admin/users"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("GET", "/admin/users/{user_id}"): Row(_ADMIN_ONLY),
    ("POST", "/admin/users/{user_id}/disable"): Row(_ADMIN_ONLY, body={"reason": "x"}),
    ("POST", "/admin/users/{user_id}/enable"): Row(_ADMIN_ONLY),
    ("PUT", "/admin/users/{user_id}/roles"): Row(_ADMIN_ONLY, body={"roles": ["admin"]}),
    ("GET", "/admin/figures"): Row(
        _ADMIN_ONLY, query={"from": "2026-11-01", "to": "2026-11-30"}, expect=frozenset({403})
    ),
    # the audit log: admins only
    ("GET", "/admin/audit"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    # reviews: only the session's driver reviews, only the charger's host replies or rates
    ("POST", "/sessions/{session_id}/review"): Row(_DRIVERS, body={"rating": 5}),
    ("GET", "/chargers/{charger_id}/reviews"): Row(_DRIVERS),
    ("POST", "/reviews/{review_id}/reply"): Row(_HOSTS, body={"text": "Thanks"}),
    ("POST", "/admin/reviews/{review_id}/hide"): Row(_ADMIN_ONLY, body={"reason": "spam"}),
    ("POST", "/admin/reviews/{review_id}/restore"): Row(_ADMIN_ONLY, body={"note": "ok"}),
    ("GET", "/admin/reviews"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/sessions/{session_id}/driver-rating"): Row(_HOSTS, body={"rating": 1}),
    # disputes: the session's driver, the charger's host, admins
    ("POST", "/sessions/{session_id}/disputes"): Row(
        _DRIVERS, body={"reason_code": "other", "description": "Not mine"}
    ),
    ("GET", "/disputes"): Row(("driver_a", "host_a"), excludes=("dispute_id",)),
    ("GET", "/disputes/{dispute_id}"): Row(_DRIVERS),
    ("POST", "/disputes/{dispute_id}/response"): Row(_HOSTS, body={"text": "Not mine"}),
    ("POST", "/disputes/{dispute_id}/photos"): Row(
        _DRIVERS, files={"photo": ("p.png", _PNG, "image/png")}
    ),
    ("GET", "/disputes/{dispute_id}/photos/{photo_id}"): Row(_DRIVERS),
    ("GET", "/admin/disputes"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/admin/disputes/{dispute_id}/resolve"): Row(
        _ADMIN_ONLY, body={"outcome": "rejected", "note": "no"}
    ),
    # the caller's own profile: no ids to aim at; anonymous callers are refused
    ("GET", "/me"): Row(("anonymous",), expect=frozenset({401})),
    ("PATCH", "/me"): Row(("anonymous",), body={"name": "x"}, expect=frozenset({401})),
    ("POST", "/auth/logout-everywhere"): Row(("anonymous",), expect=frozenset({401})),
    # notification settings and push subscriptions: the caller's own (from the token);
    # driver B has a push subscription the others must neither see nor remove
    ("GET", "/me/notifications"): Row(("anonymous",), expect=frozenset({401})),
    ("PUT", "/me/notifications"): Row(
        ("anonymous",),
        body={"booking_confirmed": {"email": True, "sms": False, "push": False}},
        expect=frozenset({401}),
    ),
    ("POST", "/me/push-subscriptions"): Row(("anonymous",), body={}, expect=frozenset({401})),
    ("GET", "/me/push-subscriptions"): Row(("driver_a", "host_a"), excludes=("subscription_id",)),
    ("DELETE", "/me/push-subscriptions/{subscription_id}"): Row(_DRIVERS),
    # The pages (cloud/web/router.py): signed in by the session cookie, or (API clients, and
    # these rows) a bearer token; another user's object is the 404 page. A bearer caller
    # needs no CSRF token (no ambient credential to abuse).
    ("GET", "/app/sessions"): Row(("driver_a", "host_a"), excludes=("session_id",)),
    ("GET", "/app/bookings"): Row(("driver_a", "host_a"), excludes=("booking_id",)),
    ("GET", "/app/chargers/{charger_id}/quote"): Row(_DRIVERS),
    ("POST", "/app/chargers/{charger_id}/pay"): Row(
        _DRIVERS, form={"connector": "1", "duration_min": "60", "card_number": "4111111111111111"}
    ),
    ("POST", "/app/chargers/{charger_id}/unlock"): Row(
        _DRIVERS, form={"connector": "1", "booking_id": "{booking_id}"}
    ),
    ("GET", "/app/sessions/{session_id}"): Row(_DRIVERS),
    ("POST", "/app/sessions/{session_id}/stop"): Row(_DRIVERS, form={}),
    ("GET", "/app/sessions/{session_id}/receipt"): Row(_DRIVERS),
    ("GET", "/app/invoices/{invoice_id}.pdf"): Row(_DRIVERS),
    ("WS", "/app/sessions/{session_id}/live"): Row(_DRIVERS),
    ("POST", "/app/bookings/{booking_id}/pin"): Row(_DRIVERS, form={}),
    # The host's pages (cloud/web/host.py): another host's charger or booking is the 404
    # page, a driver or technician gets the 403 page (not a host).
    ("GET", "/app/host"): Row(("host_a",), excludes=("charger_id", "booking_id")),
    ("POST", "/app/host/bookings/{booking_id}/approve"): Row(_HOSTS, form={}),
    ("POST", "/app/host/bookings/{booking_id}/decline"): Row(_HOSTS, form={}),
    ("GET", "/app/host/chargers/{charger_id}"): Row(_HOSTS),
    ("POST", "/app/host/chargers/{charger_id}"): Row(_HOSTS, form={"name": "Mine now"}),
    ("POST", "/app/host/chargers/{charger_id}/pairing-code"): Row(_HOSTS, form={}),
    ("GET", "/app/host/chargers/{charger_id}/sticker"): Row(_HOSTS),
    ("GET", "/app/host/chargers/{charger_id}/sticker.pdf"): Row(_HOSTS),
    ("GET", "/app/host/earnings"): Row(("host_a",), excludes=("payout_id", "charger_id")),
    # The driver's later pages (cloud/web/driver.py): payments, reviews, disputes.
    ("GET", "/app/chargers/{charger_id}"): Row(_DRIVERS),
    ("POST", "/app/chargers/{charger_id}/checkout"): Row(
        _DRIVERS, form={"connector": "1", "duration_min": "60"}
    ),
    ("POST", "/app/payments/{payment_id}/verify"): Row(
        _DRIVERS, form={"card_number": "4111111111111111"}
    ),
    ("GET", "/app/due"): Row(("driver_a", "host_a"), excludes=("payment_id",)),
    ("POST", "/app/bookings/{booking_id}/pay"): Row(_DRIVERS, form={}),
    # Paying the caller's own amount due: drivers only, as POST /amount-due/payment.
    ("POST", "/app/due/pay"): Row(("host_a", "technician"), form={}, expect=frozenset({403})),
    ("GET", "/app/sessions/{session_id}/review"): Row(_DRIVERS),
    ("POST", "/app/sessions/{session_id}/review"): Row(_DRIVERS, form={"rating": "5"}),
    ("GET", "/app/sessions/{session_id}/dispute"): Row(_DRIVERS),
    ("POST", "/app/sessions/{session_id}/dispute"): Row(
        _DRIVERS, form={"reason_code": "damage", "description": "Cable cut"}
    ),
    ("GET", "/app/disputes"): Row(("driver_a", "host_a"), excludes=("dispute_id",)),
    ("GET", "/app/disputes/{dispute_id}/photos/{photo_id}"): Row(_DRIVERS),
    # The host's live charger list, KYC, reviews and calendar pages (cloud/web/host.py,
    # host_kyc.py, host_reviews.py, host_calendar.py): the KYC is the caller's own (no id).
    ("GET", "/app/host/live"): Row(("host_a",), excludes=("charger_id",)),
    # Its push socket subscribes the caller's own chargers only; not a host: closed 4403.
    ("WS", "/app/host/live/ws"): Row(("driver_a", "technician")),
    ("GET", "/app/host/kyc"): Row(("driver_a", "technician"), expect=frozenset({403})),
    ("POST", "/app/host/kyc"): Row(("driver_a", "technician"), form={}, expect=frozenset({403})),
    ("GET", "/app/host/reviews"): Row(("host_a",), excludes=("review_id", "charger_id")),
    ("POST", "/app/host/reviews/{review_id}/reply"): Row(_HOSTS, form={"text": "Thanks"}),
    ("GET", "/app/host/chargers/{charger_id}/availability"): Row(_HOSTS),
    ("POST", "/app/host/chargers/{charger_id}/availability"): Row(
        _HOSTS, form={"open_0_1": "08:00", "close_0_1": "20:00"}
    ),
    ("POST", "/app/host/chargers/{charger_id}/blocked-periods"): Row(
        _HOSTS, form={"start": "2030-01-01T10:00", "end": "2030-01-01T11:00"}
    ),
    ("POST", "/app/host/chargers/{charger_id}/blocked-periods/{period_id}/delete"): Row(
        _HOSTS, form={}
    ),
    ("GET", "/app/host/chargers/{charger_id}/photos/{photo_id}"): Row(_HOSTS),
    ("POST", "/app/host/chargers/{charger_id}/photos"): Row(
        _HOSTS, files={"photo": ("p.png", _PNG, "image/png")}
    ),
    ("POST", "/app/host/chargers/{charger_id}/photos/{photo_id}/delete"): Row(_HOSTS, form={}),
    # The admin console (cloud/web/admin.py): admins only, the 403 page for anyone else.
    ("GET", "/app/admin"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("GET", "/app/admin/chargers"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/app/admin/chargers/{charger_id}/approve"): Row(_ADMIN_ONLY, form={}),
    ("POST", "/app/admin/chargers/{charger_id}/reject"): Row(_ADMIN_ONLY, form={"note": "x"}),
    ("POST", "/app/admin/chargers/{charger_id}/suspend"): Row(_ADMIN_ONLY, form={"note": "x"}),
    ("GET", "/app/admin/kyc"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("GET", "/app/admin/kyc/{submission_id}"): Row(_ADMIN_ONLY),
    ("GET", "/app/admin/kyc/{submission_id}/documents/{kind}"): Row(_ADMIN_ONLY),
    ("POST", "/app/admin/kyc/{submission_id}/verify"): Row(_ADMIN_ONLY, form={}),
    ("POST", "/app/admin/kyc/{submission_id}/reject"): Row(_ADMIN_ONLY, form={"reason": "no"}),
    ("GET", "/app/admin/disputes"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/app/admin/disputes/{dispute_id}/resolve"): Row(
        _ADMIN_ONLY, form={"outcome": "rejected", "note": "no"}
    ),
    ("GET", "/app/admin/reviews"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/app/admin/reviews/{review_id}/hide"): Row(_ADMIN_ONLY, form={"reason": "spam"}),
    ("POST", "/app/admin/reviews/{review_id}/restore"): Row(_ADMIN_ONLY, form={"note": "ok"}),
    ("GET", "/app/admin/users"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/app/admin/users/{user_id}/disable"): Row(_ADMIN_ONLY, form={"reason": "x"}),
    ("POST", "/app/admin/users/{user_id}/enable"): Row(_ADMIN_ONLY, form={}),
    ("GET", "/app/admin/money"): Row(_ADMIN_ONLY, expect=frozenset({403})),
    ("POST", "/app/admin/payouts/{payout_id}/approve"): Row(_ADMIN_ONLY, form={}),
    ("POST", "/app/admin/payouts/{payout_id}/reject"): Row(_ADMIN_ONLY, form={"reason": "no"}),
}

#: Routes that are public and take no id: outside the matrix on purpose.
PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/chargers"),
        ("POST", "/devices/claim"),
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/otp/request"),
        ("POST", "/auth/otp/verify"),
        # Payment providers' webhooks: no bearer token (a provider's servers call them), but
        # authenticated by the signature over the raw body: an unsigned or forged body is a
        # 400 and changes nothing (tests/cloud/test_webhooks.py). No id in the path, no
        # object of anyone's to aim at.
        ("POST", "/webhooks/razorpay"),
        ("POST", "/webhooks/stripe"),
        ("POST", "/webhooks/dummy"),
        # The pages' sign-in forms and home: nobody's objects (CSRF-checked forms, rate
        # limited like the API's auth routes); signing out ends only the caller's session.
        ("GET", "/app"),
        ("GET", "/app/signin"),
        ("POST", "/app/signin/otp"),
        ("POST", "/app/signin/otp/verify"),
        ("POST", "/app/signin/password"),
        ("POST", "/app/signout"),
        # The host's new-charger form and payout request: they create the caller's own
        # objects only (a stranger is sent to sign in, a non-host gets the 403 page:
        # tests/cloud/test_host_pages.py).
        ("GET", "/app/host/chargers/new"),
        ("POST", "/app/host/chargers/new"),
        ("POST", "/app/host/payouts"),
        # The search page (anyone may search; GET /chargers's handler).
        ("GET", "/app/search"),
        # The service worker's script (a static file at the root, for its scope).
        ("GET", "/sw.js"),
    }
)

_GUARDS = ("current_principal", "optional_principal", "require_roles")


def _leaf_routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, also those of included routers (FastAPI ≥ 0.16x keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def _guarded(route: APIRoute) -> bool:
    names: list[str] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        names.append(getattr(dep.call, "__qualname__", ""))
        stack.extend(dep.dependencies)
    return any(name.startswith(_GUARDS) for name in names)


def app_routes(app: FastAPI) -> dict[tuple[str, str], bool]:
    """(method, path) → whether it must be in the matrix (id in path, or a guard)."""
    found: dict[tuple[str, str], bool] = {}
    for route in _leaf_routes(app.routes):
        if isinstance(route, APIWebSocketRoute):
            found["WS", route.path] = True
        elif isinstance(route, APIRoute):
            for method in (route.methods or set()) - {"HEAD", "OPTIONS"}:
                found[method, route.path] = "{" in route.path or _guarded(route)
    return found


def test_every_guarded_route_is_in_the_matrix() -> None:
    routes = app_routes(create_app(Settings()))
    missing = sorted(key for key, guarded in routes.items() if guarded and key not in MATRIX)
    unclassified = sorted(
        key for key, guarded in routes.items() if not guarded and key not in set(MATRIX) | PUBLIC
    )
    stale = sorted(key for key in MATRIX if key not in routes)
    assert not missing, f"routes with ids or a role missing from the BOLA matrix: {missing}"
    assert not unclassified, f"public routes neither in the matrix nor in PUBLIC: {unclassified}"
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"


# --- the world ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    users: dict[str, ApiUser]
    ids: dict[str, str]


async def _charger(pg: PgConnection, host: ApiUser, *, approved: bool) -> tuple[str, str, str]:
    charger_id, device_id, connector_id = new_ulid(), f"cm-{new_ulid().lower()}", new_ulid()
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device_id, host.host_id)
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code, moderation_status, is_listed) "
        "VALUES ($1, $2, $3, 'Gate', '1 Road', 'Pune', 'MH', '411001', 18.5, 73.8, 1800, $4, "
        "$5, $6)",
        charger_id,
        host.host_id,
        device_id,
        charger_id[-10:],
        "approved" if approved else "pending",
        approved,
    )
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
        "VALUES ($1, $2, 1, 'Type2', 7400)",
        connector_id,
        charger_id,
    )
    return charger_id, device_id, connector_id


@pytest.fixture
async def world(market_api: Api, pg: PgConnection) -> World:
    s = market_api.settings
    users = {
        "host_a": await add_user(pg, s, Role.HOST),
        "host_b": await add_user(pg, s, Role.HOST),
        "driver_a": await add_user(pg, s, Role.DRIVER),
        "driver_b": await add_user(pg, s, Role.DRIVER),
        "technician": await add_user(pg, s, Role.TECHNICIAN),
    }
    await _charger(pg, users["host_a"], approved=True)  # A has one too: a real other host
    charger_id, device_id, connector_id = await _charger(pg, users["host_b"], approved=False)
    booking_id = new_ulid()
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status) "
        "VALUES ($1, $2, $3, $4, tstzrange(now() + interval '2 days', "
        "now() + interval '2 days 1 hour'), 'confirmed')",
        booking_id,
        users["driver_b"].id,
        charger_id,
        connector_id,
    )
    session_id = new_ulid()  # the public session id is the device's session id
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, last_event_seq, events_received) "
        "VALUES ($1, $2, 1, $3, $4, 'Remote', 'r', 'active', now(), 0, 10, 10, 1, 1)",
        device_id,
        session_id,
        charger_id,
        users["driver_b"].id,
    )
    photo_id = new_ulid()
    await pg.execute(
        "INSERT INTO charger_photos (id, charger_id, storage_key, content_type, size_bytes) "
        "VALUES ($1, $2, $3, 'image/png', 10)",
        photo_id,
        charger_id,
        f"{charger_id}/{photo_id}.png",
    )
    period_id = await pg.fetchval(
        "INSERT INTO blocked_periods (charger_id, period) VALUES ($1, "
        "tstzrange(now() + interval '5 days', now() + interval '5 days 1 hour')) RETURNING id",
        charger_id,
    )
    invoice_id = new_ulid()  # driver B's invoice for the session (as issued by cloud.invoices)
    await pg.execute(
        "INSERT INTO invoices (id, kind, supplier, fy, number, serial, session_id, host_id, "
        "driver_id, issue_date, supplier_name, supplier_address, supplier_gstin, "
        "supplier_state_code, recipient_name, recipient_state_code, place_of_supply_code, sac, "
        "description, taxable_paise, cgst_paise, sgst_paise, igst_paise, total_paise, gst_bp, "
        "lines) SELECT $1, 'invoice', 'platform', 2026, 1, 'INV/2627/000001', id, $2, $3, "
        "current_date, 'ChargeMitra', 'Pune', '27AAPFU0939F1ZV', '27', 'B', '27', '27', "
        "'998714', 'EV charging', 100, 9, 9, 0, 118, 1800, '[]' FROM sessions "
        "WHERE device_session_id = $4",
        invoice_id,
        users["host_b"].host_id,
        users["driver_b"].id,
        session_id,
    )
    payout_id = new_ulid()
    await pg.execute(
        "INSERT INTO payouts (id, host_id, amount_paise, period_start, period_end) "
        "VALUES ($1, $2, 100, now() - interval '7 days', now())",
        payout_id,
        users["host_b"].host_id,
    )
    payment_id = new_ulid()
    await pg.execute(
        "INSERT INTO payments (id, user_id, booking_id, provider, provider_order_id, "
        "amount_paise) VALUES ($1, $2, $3, 'dummy', $4, 100)",
        payment_id,
        users["driver_b"].id,
        booking_id,
        f"order_{payment_id}",
    )
    submission_id = new_ulid()  # host B's KYC, awaiting a decision
    await pg.execute(
        "INSERT INTO kyc_submissions (id, host_id, pan) VALUES ($1, $2, 'ABCPE1234F')",
        submission_id,
        users["host_b"].host_id,
    )
    await pg.execute(
        "INSERT INTO kyc_documents (id, submission_id, kind, storage_key, content_type, "
        "size_bytes) VALUES ($1, $2, 'pan_card', $3, 'image/png', 10)",
        new_ulid(),
        submission_id,
        f"{'0' * 32}.bin",
    )
    subscription_id = new_ulid()
    await pg.execute(
        "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth) "
        "VALUES ($1, $2, $3, 'k', 'a')",
        subscription_id,
        users["driver_b"].id,
        f"https://fcm.googleapis.com/fcm/send/{subscription_id}",
    )
    review_id, dispute_id = new_ulid(), new_ulid()
    await pg.execute(
        "INSERT INTO reviews (id, charger_id, user_id, session_id, rating) SELECT $1, $2, $3, "
        "id, 4 FROM sessions WHERE device_session_id = $4",
        review_id,
        charger_id,
        users["driver_b"].id,
        session_id,
    )
    await pg.execute(
        "INSERT INTO disputes (id, session_id, raised_by, reason_code, description) SELECT $1, "
        "id, $2, 'billed_wrong', 'Too much' FROM sessions WHERE device_session_id = $3",
        dispute_id,
        users["driver_b"].id,
        session_id,
    )
    await pg.execute(  # a dispute photo under the listing photo's id: one id aims at both
        "INSERT INTO dispute_photos (id, dispute_id, storage_key, content_type, size_bytes) "
        "VALUES ($1, $2, $3, 'image/png', 10)",
        photo_id,
        dispute_id,
        f"{dispute_id}/{photo_id}.png",
    )
    ids = {
        "charger_id": charger_id,
        "device_id": device_id,
        "booking_id": booking_id,
        "session_id": session_id,
        "photo_id": photo_id,
        "period_id": str(period_id),
        "code": charger_id[-10:],
        "invoice_id": invoice_id,
        "payout_id": payout_id,
        "payment_id": payment_id,
        "submission_id": submission_id,
        "kind": "pan_card",
        "subscription_id": subscription_id,
        "review_id": review_id,
        "dispute_id": dispute_id,
        "user_id": users["driver_b"].id,
    }
    return World(users, ids)


async def _ws_open(app: FastAPI, path: str, token: str | None) -> list[dict[str, Any]]:
    """Open a WebSocket on the app (raw ASGI) and return what it sent up to its first data
    frame or its close (the streams accept first, then check, then close with 4401/4403)."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []
    decided = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if message["type"] in ("websocket.close", "websocket.send"):
            decided.set()

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": f"access_token={token}".encode() if token else b"",
        "headers": [(b"host", b"api")],
        "client": ("127.0.0.1", 50000),
        "server": ("api", 80),
        "subprotocols": [],
    }
    task = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait_for(decided.wait(), timeout=10)
    finally:
        await incoming.put({"type": "websocket.disconnect", "code": 1000})
        # Only what was sent matters; how the stream ends after a disconnect does not.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
    return sent


def _ws_refused(sent: list[dict[str, Any]], codes: tuple[int, ...] = (4401, 4403)) -> bool:
    """Closed with one of ``codes`` before any data frame."""
    data = [m for m in sent if m["type"] == "websocket.send"]
    closes = [m for m in sent if m["type"] == "websocket.close"]
    return not data and bool(closes) and closes[0].get("code") in codes


def _body(world: World, row: Row) -> dict[str, Any] | None:
    """The row's body with ``"{charger_id}"``-style values replaced by B's ids."""
    if row.body is None:
        return None
    return {
        key: value.format(**world.ids) if isinstance(value, str) and "{" in value else value
        for key, value in row.body.items()
    }


def _form(world: World, row: Row) -> dict[str, str] | None:
    """The row's form body, ids filled in like :func:`_body`'s."""
    if row.form is None:
        return None
    return {key: value.format(**world.ids) for key, value in row.form.items()}


def _headers(world: World, who: str) -> dict[str, str]:
    return {} if who == "anonymous" else world.users[who].headers


async def test_nobody_reaches_another_users_objects(market_api: Api, world: World) -> None:
    breaches: list[str] = []
    for (method, template), row in MATRIX.items():
        path = template.format(**{k: world.ids[k] for k in IDS if "{" + k + "}" in template})
        for who in row.as_:
            if method == "WS":
                token = world.users[who].headers["Authorization"].split()[1]
                sent = await _ws_open(market_api.app, path, token)
                if not _ws_refused(sent):
                    breaches.append(f"WS {template} as {who}: {sent}")
                continue
            answer = await market_api.client.request(
                method,
                path,
                params=row.query,
                json=_body(world, row),
                data=_form(world, row),
                files=row.files,
                headers=_headers(world, who),
            )
            if row.excludes:
                leaked = [k for k in row.excludes if world.ids[k] in answer.text]
                if answer.status_code != 200 or leaked:
                    breaches.append(f"{method} {template} as {who}: {answer.status_code} {leaked}")
            elif answer.status_code not in row.expect:
                breaches.append(
                    f"{method} {template} as {who}: {answer.status_code} {answer.text[:200]}"
                )
    assert not breaches, "\n".join(breaches)


async def test_the_owners_pass_where_intruders_fail(market_api: Api, world: World) -> None:
    """The matrix is not vacuous: the same requests from B succeed (a 404 for everyone would
    pass the matrix too)."""
    ids = world.ids
    host_b, driver_b = world.users["host_b"].headers, world.users["driver_b"].headers
    checks = [
        ("GET", f"/host/chargers/{ids['charger_id']}", host_b),
        ("GET", f"/chargers/{ids['charger_id']}/qr.svg", host_b),
        ("GET", f"/bookings/{ids['booking_id']}", driver_b),
        ("GET", f"/sessions/{ids['session_id']}", driver_b),
        ("GET", f"/invoices/{ids['invoice_id']}", driver_b),
        ("GET", f"/invoices/{ids['invoice_id']}.pdf", host_b),
        ("GET", f"/disputes/{ids['dispute_id']}", driver_b),
        ("GET", f"/disputes/{ids['dispute_id']}", host_b),
    ]
    for method, path, headers in checks:
        answer = await market_api.client.request(method, path, headers=headers)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
    quote = _body(world, MATRIX["POST", "/quotes"])
    answer = await market_api.client.post("/quotes", json=quote, headers=host_b)
    assert answer.status_code == 200, answer.text
    token = driver_b["Authorization"].split()[1]
    sent = await _ws_open(market_api.app, f"/ws/sessions/{ids['session_id']}", token)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"], sent
    bookings = await market_api.client.get("/bookings", headers=driver_b)
    assert ids["booking_id"] in bookings.text
    pushes = await market_api.client.get("/me/push-subscriptions", headers=driver_b)
    assert ids["subscription_id"] in pushes.text
    for owner in (driver_b, host_b):
        disputes = await market_api.client.get("/disputes", headers=owner)
        assert ids["dispute_id"] in disputes.text


async def test_a_stranger_without_a_token_is_refused_everywhere(
    market_api: Api, world: World
) -> None:
    refused = []
    for (method, template), row in MATRIX.items():
        path = template.format(**{k: world.ids[k] for k in IDS if "{" + k + "}" in template})
        if method == "WS":
            sent = await _ws_open(market_api.app, path, None)
            if not _ws_refused(sent, (4401,)):
                refused.append(f"WS {template}: {sent}")
            continue
        public_view = method == "GET" and template in (
            "/chargers/{charger_id}",
            "/c/{code}",
            "/chargers/{charger_id}/qr.svg",
            "/chargers/{charger_id}/qr.png",
            "/chargers/{charger_id}/photos/{photo_id}",
            "/chargers/{charger_id}/reviews",
            "/app/chargers/{charger_id}",
        )
        if public_view or (method, template) == ("POST", "/quotes"):
            expected: frozenset[int] = frozenset({404})  # public views; B's is not approved
        elif template.startswith("/app/"):
            # A page sends a stranger to sign in (303); a form without the visitor's CSRF
            # token is refused before anything else (403).
            expected = frozenset({303}) if method == "GET" else frozenset({403})
        else:
            expected = frozenset({401})
        answer = await market_api.client.request(
            method,
            path,
            params=row.query,
            json=_body(world, row),
            data=_form(world, row),
            files=row.files,
        )
        if answer.status_code not in expected:
            refused.append(f"{method} {template}: {answer.status_code}")
    assert not refused, "\n".join(refused)
