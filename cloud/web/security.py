"""Security headers for every answer, and the Content-Security-Policy of the pages.

Pages run no inline script at all (scripts are files under ``/static``), so the policy needs
neither ``'unsafe-inline'`` nor nonces: ``script-src 'self'``. Styles are files too. The only
connections a page opens are to this origin (the live session's WebSocket, the availability
refresh). Answers outside development also carry HSTS.

Plain ASGI, like :class:`cloud.metrics.MetricsMiddleware`: the headers are added to the
response's start message, with no per-request tasks or streams.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
HSTS = "max-age=31536000; includeSubDomains"
#: On every answer, unless the route set its own.
COMMON = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(self)"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.hsts = settings.app.env in (Environment.STAGING, Environment.PRODUCTION)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        versioned_static = scope["path"].startswith("/static/") and b"v=" in scope.get(
            "query_string", b""
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in COMMON:
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                if self.hsts:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                if versioned_static:
                    headers["Cache-Control"] = STATIC_CACHE
            await send(message)

        await self.app(scope, receive, send_with_headers)
