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


def content_security_policy(
    *,
    scripts: tuple[str, ...] = (),
    images: tuple[str, ...] = (),
    frames: tuple[str, ...] = (),
    connections: tuple[str, ...] = (),
) -> str:
    """The pages' policy, widened by exact sources for the one page that needs them: the
    checkout page adds the configured provider's own script (and the frames it opens), the
    search page the map's tile server. Nothing else ever joins ``script-src``."""
    frame = f"frame-src {' '.join(frames)}" if frames else None
    parts = (
        "default-src 'none'",
        " ".join(("script-src 'self'", *scripts)),
        "style-src 'self'",
        " ".join(("img-src 'self' data:", *images)),
        " ".join(("connect-src 'self'", *connections)),
        "manifest-src 'self'",
        frame,
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
    return "; ".join(p for p in parts if p)


CONTENT_SECURITY_POLICY = content_security_policy()
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
                    # A page that set its own (content_security_policy() widened) keeps it.
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                if self.hsts:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                if versioned_static:
                    headers["Cache-Control"] = STATIC_CACHE
            await send(message)

        await self.app(scope, receive, send_with_headers)
