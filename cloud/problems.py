"""The one place :class:`~cloud.errors.CloudError` becomes an HTTP answer (RFC 9457).

A problem document is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and extension members taken from the error's fields. Unknown exceptions become a
bare 500 without internals: the traceback goes to the log, not to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cloud import errors

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://chargemitra.in/problems/"
MEDIA_TYPE = "application/problem+json"

#: Most specific class first: the first ``isinstance`` match wins.
STATUS_BY_ERROR: tuple[tuple[type[errors.CloudError], int, str], ...] = (
    (errors.BookingOverlap, 409, "booking-overlap"),
    (errors.BookingNotActive, 409, "booking-not-active"),
    (errors.ConnectorHeld, 409, "connector-held"),
    (errors.UnlockRefused, 409, "unlock-refused"),
    (errors.ChargerOffline, 503, "charger-offline"),
    (errors.ChargerNoAnswer, 504, "charger-no-answer"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.PayloadTooLarge, 413, "content-too-large"),
    (errors.InvalidRequest, 422, "invalid-request"),
    (errors.PaymentRequired, 402, "payment-required"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.KycRequired, 403, "kyc-required"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.RateLimited, 429, "rate-limited"),
    (errors.PairingCodeInvalid, 400, "pairing-code-invalid"),
    (errors.SignatureInvalid, 400, "signature-invalid"),
    (errors.PaymentProviderError, 502, "payment-provider-error"),
    (errors.DeviceRevoked, 403, "device-revoked"),
    (errors.DependencyUnavailable, 503, "dependency-unavailable"),
    (errors.BrokerError, 502, "broker-error"),
    (errors.ConfigError, 500, "config-error"),
    (errors.DocumentUnreadable, 500, "document-unreadable"),
    (errors.CloudError, 500, "internal"),
)

#: Error attributes never exposed to a client.
_PRIVATE_FIELDS = frozenset({"value"})


def problem_for(exc: errors.CloudError) -> tuple[int, dict[str, Any]]:
    """The status and problem document for ``exc``."""
    # The table ends with CloudError itself, so there is always a match.
    status, slug = next((s, g) for cls, s, g in STATUS_BY_ERROR if isinstance(exc, cls))
    # 5xx details stay in the log, except an unavailable dependency, which operators need.
    public = status < 500 or isinstance(
        exc, errors.DependencyUnavailable | errors.ChargerOffline | errors.ChargerNoAnswer
    )
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": str(exc) if public else "internal error",
    }
    if isinstance(exc, errors.InvalidRequest) and status == 422:
        # The same shape as a validation 422 (cloud.schemas.ValidationProblem).
        body["errors"] = [{"field": exc.field or "body", "message": str(exc)}]
    if public:
        for key, value in vars(exc).items():
            if key not in _PRIVATE_FIELDS and isinstance(value, str | int | float | bool):
                body[key] = value
    return status, body


def _response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _cloud_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.CloudError)
    status, body = problem_for(exc)
    if isinstance(exc, errors.ChargerOffline | errors.ChargerNoAnswer):
        log.info("request not served: %s", exc)  # the field, not the cloud, is at fault
    elif status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    headers: dict[str, str] | None = None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, errors.Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="chargemitra"'}
    return _response(status, body, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
    body = {
        "type": PROBLEM_TYPE_BASE + "invalid-request",
        "title": "Invalid request",
        "status": 422,
        "detail": "the request body or parameters are invalid",
        "errors": problems,
    }
    return _response(422, body)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s", exc, exc_info=exc)
    return _response(
        500,
        {
            "type": PROBLEM_TYPE_BASE + "internal",
            "title": "Internal",
            "status": 500,
            "detail": "internal error",
        },
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path."""
    methods: set[str] = set()
    scope = {**request.scope, "type": "http"}
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (unknown route 404, 405, unparsable JSON body 400) as
    problems too, so a client parses one error shape.

    A 405's ``Allow`` lists every method of the path: Starlette's names only the first
    route that matched the path (``OPTIONS /bookings`` said ``Allow: POST``, leaving out GET).
    """
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    slug = {400: "bad-request", 404: "not-found", 405: "method-not-allowed"}.get(
        exc.status_code, "http-error"
    )
    body = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": slug.replace("-", " ").capitalize(),
        "status": exc.status_code,
        "detail": str(exc.detail),
    }
    return _response(exc.status_code, body, headers or None)


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""
    app.add_exception_handler(errors.CloudError, _cloud_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
