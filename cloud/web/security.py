"""Security headers for every answer, and the Content-Security-Policy of the pages.

Pages run no inline script at all (scripts are files under ``/static``), so the policy needs
neither ``'unsafe-inline'`` nor nonces: ``script-src 'self'``. Styles are files too. The only
connections a page opens are to this origin (the live session's WebSocket, the availability
refresh). Answers outside development also carry HSTS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from cloud.settings import Environment, Settings

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
#: Static files are named by content (``?v=<hash>``): a browser may keep them a year.
STATIC_CACHE = "public, max-age=31536000, immutable"


def install_security_headers(app: FastAPI, settings: Settings) -> None:
    hsts = settings.app.env in (Environment.STAGING, Environment.PRODUCTION)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(self)")
        if headers.get("content-type", "").startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if hsts:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.url.path.startswith("/static/") and request.query_params.get("v"):
            headers["Cache-Control"] = STATIC_CACHE
        return response
