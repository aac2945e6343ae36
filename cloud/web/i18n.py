"""The pages' languages: gettext catalogues (Babel) for en-IN and hi-IN.

The language of a request is, in order: ``?lang=`` (and then remembered in a cookie), the
``cm_lang`` cookie, the browser's ``Accept-Language``, else en-IN. Catalogues are the
compiled ``translations/<locale>/LC_MESSAGES/messages.mo`` files (committed; the bootstrap
compiles them again from the ``.po`` files), loaded once per process on first use.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from babel.support import Translations
from starlette.requests import Request

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEFAULT_LOCALE = "en_IN"
#: Locale → the language tag pages declare (``<html lang>``).
LOCALES = {"en_IN": "en-IN", "hi_IN": "hi-IN"}
LANG_COOKIE = "cm_lang"


@cache
def translations(locale: str) -> Translations:
    """The compiled catalogue of ``locale`` (one of :data:`LOCALES`); a missing one is an
    error, not English in disguise (the bootstrap compiles them, the repository has them)."""
    path = TRANSLATIONS_DIR / locale / "LC_MESSAGES" / "messages.mo"
    with path.open("rb") as fp:
        return Translations(fp, domain="messages")


def _known(value: str | None) -> str | None:
    """``hi``, ``hi-IN``, ``hi_in`` → ``hi_IN``; any English (``en-GB``) → ``en_IN``; None
    for a language we do not ship."""
    if not value:
        return None
    language = value.strip().replace("-", "_").lower().split("_")[0]
    for locale in LOCALES:
        if language == locale.split("_")[0].lower():
            return locale
    return None


def accepted(header: str) -> str | None:
    """The first shipped language in an ``Accept-Language`` header, by its q-values."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        locale = _known(tag)
        if locale is not None and q > 0:
            ranked.append((-q, index, locale))
    return min(ranked)[2] if ranked else None


def choose_locale(request: Request) -> str:
    return (
        _known(request.query_params.get("lang"))
        or _known(request.cookies.get(LANG_COOKIE))
        or accepted(request.headers.get("accept-language", ""))
        or DEFAULT_LOCALE
    )
