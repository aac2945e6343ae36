"""Who is looking at a page (:class:`Visitor`) and how a template becomes an answer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cloud.accounts.tokens import Principal
from cloud.deps import State, authenticate
from cloud.errors import Unauthorized
from cloud.state import AppState
from cloud.web import format as fmt
from cloud.web.i18n import LANG_COOKIE, LOCALES, choose_locale, translations
from cloud.web.websession import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    WebSession,
    check_csrf,
    cookie_secure,
    csrf_token,
    new_csrf_nonce,
    resume,
)

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
#: A year: the language choice outlives any session.
LANG_COOKIE_MAX_AGE_S = 365 * 86400


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(WEB_DIR / "templates"),
        autoescape=select_autoescape(("html",)),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship with the code: no stat() of every template file on every render.
        auto_reload=False,
    )
    env.filters.update(
        rupees=fmt.rupees, kw=fmt.kilowatts, kwh=fmt.kilowatt_hours, elapsed=fmt.elapsed
    )
    env.globals["static"] = static_url
    return env


@cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: a changed file gets a new URL."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


@dataclass(slots=True)
class Visitor:
    """The browser asking for a page: its account (if signed in), language and CSRF nonce."""

    state: AppState
    principal: Principal | None
    session: WebSession | None
    locale: str
    csrf_nonce: str
    #: The nonce was minted for this answer: the cookie must be set.
    new_nonce: bool
    #: ``?lang=`` chose the language: remember it.
    remember_locale: bool

    @property
    def csrf(self) -> str:
        secret = self.state.settings.app.secret_key.get_secret_value()
        return csrf_token(secret, self.csrf_nonce, self.session)

    def check_csrf(self, token: str | None) -> None:
        """403 for a form without this visitor's token. A caller authenticated by a bearer
        header (an API client, not a browser's ambient cookie) cannot be led into a
        cross-site request, and has no form to take a token from."""
        if self.principal is not None and self.session is None:
            return
        secret = self.state.settings.app.secret_key.get_secret_value()
        check_csrf(secret, None if self.new_nonce else self.csrf_nonce, self.session, token)

    def gettext(self, message: str) -> str:
        return translations(self.locale).gettext(message)


async def page_visitor(request: Request, state: State) -> Visitor:
    """The :class:`Visitor` of this request: signed in by the ``cm_session`` cookie, or by a
    bearer token (checked like the API's), or anonymous."""
    principal: Principal | None = None
    session: WebSession | None = None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        resumed = await resume(state, cookie)
        if resumed is not None:
            principal, session = resumed
    authorization = request.headers.get("authorization", "")
    if principal is None and authorization.lower().startswith("bearer "):
        principal = await authenticate(state, authorization.split(" ", 1)[1].strip())
    elif principal is None and authorization:
        raise Unauthorized("the Authorization header must be: Bearer <access token>")
    nonce = request.cookies.get(CSRF_COOKIE)
    return Visitor(
        state=state,
        principal=principal,
        session=session,
        locale=choose_locale(request),
        csrf_nonce=nonce or new_csrf_nonce(),
        new_nonce=not nonce,
        remember_locale="lang" in request.query_params,
    )


PageVisitor = Annotated[Visitor, Depends(page_visitor)]


def render(
    request: Request, visitor: Visitor, template: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    catalogue = translations(visitor.locale)
    body = (
        environment()
        .get_template(template)
        .render(
            request=request,
            me=visitor.principal,
            locale=visitor.locale,
            lang_tag=LOCALES[visitor.locale],
            csrf_field=CSRF_FIELD,
            csrf=visitor.csrf,
            _=catalogue.gettext,
            gettext=catalogue.gettext,
            ngettext=catalogue.ngettext,
            when=lambda moment: fmt.ist(moment, visitor.locale),
            clock=lambda moment: fmt.ist_time(moment, visitor.locale),
            ago=lambda moment: fmt.ago(moment, datetime.now(UTC), visitor.locale),
            **context,
        )
    )
    response = HTMLResponse(body, status_code=status_code)
    # Pages carry a user's data and CSRF tokens: never kept by a shared cache.
    response.headers["Cache-Control"] = "private, no-store"
    remember(response, visitor)
    return response


def remember(response: HTMLResponse | RedirectResponse, visitor: Visitor) -> None:
    """Set the cookies this visit minted (CSRF nonce, chosen language)."""
    secure = cookie_secure(visitor.state.settings)
    if visitor.new_nonce:
        response.set_cookie(
            CSRF_COOKIE, visitor.csrf_nonce, httponly=True, secure=secure, samesite="lax", path="/"
        )
    if visitor.remember_locale:
        response.set_cookie(
            LANG_COOKIE,
            visitor.locale,
            max_age=LANG_COOKIE_MAX_AGE_S,
            secure=secure,
            samesite="lax",
            path="/",
        )


def redirect(url: str, visitor: Visitor | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if visitor is not None:
        remember(response, visitor)
    return response


def signin_redirect(request: Request, visitor: Visitor) -> RedirectResponse:
    """To the sign-in page, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"/app/signin?next={quote(here, safe='')}", visitor)


def safe_next(target: str | None) -> str:
    """Only a path on this site (``/…``, not ``//host``): no open redirect after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/app"
