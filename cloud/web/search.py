"""The driver's search page: chargers near a place as a list and on a map, with filters.

``GET /app/search`` is a plain ``GET`` form: it works without JavaScript (the list is the
answer; the map is an enhancement drawn by ``static/search.js`` with Leaflet from the list's
own data). The form's fields become the parameters of ``GET /chargers`` and are passed to
that route's own handler (cloud/chargers/router.py ``search_chargers``), so every rule
between parameters (``from``/``to`` together, the window's length, ``available_now`` or a
window) and every filter (cloud/chargers/search.py) has one copy. What the form takes in the
units people use — rupees, a date and a time in IST, a number of hours — is turned into the
API's units here, and a wrong field is shown beside the form instead of a 422 document.

Leaflet is installed from npm by deploy/dev/bootstrap.sh and served by the app under
``/static/vendor/leaflet/`` (cloud/app.py); the tile server is a setting
(``MARKETPLACE_MAP_TILE_URL``, empty: markers without a background), and its origin is the
only source this page adds to ``img-src``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response

from cloud.chargers import router as chargers_api
from cloud.chargers import schemas, search
from cloud.chargers.models import PricingMode
from cloud.deps import State
from cloud.errors import InvalidRequest
from cloud.web.render import PageVisitor, Visitor, render
from cloud.web.security import content_security_policy
from protocols.enums import ConnectorType

router = APIRouter(include_in_schema=False)

IST = ZoneInfo("Asia/Kolkata")
#: The radius choices on the form (km); the API takes up to search.MAX_RADIUS_KM.
RADII_KM = (2, 5, 10, 25, 50)
#: The rating choices on the form (stars; 0: any).
RATINGS = ("0", "3", "4", "4.5")
#: How long an "at a time" window lasts by default (hours).
DEFAULT_HOURS = 1
PAGE_SIZE = 20
#: Query fields are short: anything longer is not a value the form offers.
Field = Annotated[str, Query(max_length=40)]


@dataclass(frozen=True, slots=True)
class Leaflet:
    """Leaflet's files as this app serves them (URLs carry a content hash)."""

    script: str
    stylesheet: str


@cache
def _leaflet(directory: Path) -> Leaflet | None:
    try:
        script = (directory / "leaflet.js").read_bytes()
        style = (directory / "leaflet.css").read_bytes()
    except OSError:
        return None
    version = hashlib.sha256(script + style).hexdigest()[:12]
    return Leaflet(
        script=f"/static/vendor/leaflet/leaflet.js?v={version}",
        stylesheet=f"/static/vendor/leaflet/leaflet.css?v={version}",
    )


def leaflet(state: State) -> Leaflet | None:
    """Leaflet's URLs, or None when its files are not installed (the list alone)."""
    return _leaflet(state.settings.marketplace.leaflet_dir)


def tile_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of the tile URL template, for the page's ``img-src``."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class FormError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _number(value: str, field: str, message: str) -> Decimal | None:
    value = value.strip().replace(",", "")
    if not value:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise FormError(field, message) from None
    if not number.is_finite():
        raise FormError(field, message)
    return number


def _window(visitor: Visitor, day: str, at: str, hours: str) -> tuple[datetime, datetime]:
    """The "at a time" window: a date and a time in IST, for a number of hours."""
    _ = visitor.gettext
    try:
        start_day = date.fromisoformat(day.strip())
    except ValueError:
        raise FormError("date", _("Choose a date.")) from None
    try:
        start_time = time.fromisoformat(at.strip())
    except ValueError:
        raise FormError("time", _("Choose a time.")) from None
    length = _number(hours, "hours", _("Enter the hours as a number."))
    length = Decimal(DEFAULT_HOURS) if length is None else length
    if not Decimal("0.25") <= length <= Decimal(24 * 7):
        raise FormError("hours", _("Between a quarter of an hour and 7 days."))
    start = datetime.combine(start_day, start_time, tzinfo=IST)
    return start, start + timedelta(minutes=int(length * 60))


@router.get("/app/search")
async def search_page(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    lat: Field = "",
    lon: Field = "",
    radius_km: Field = "10",
    connector: Field = "",
    min_kw: Field = "",
    max_price: Field = "",
    mode: Field = "",
    when: Field = "any",
    day: Annotated[str, Query(alias="date", max_length=40)] = "",
    at: Annotated[str, Query(alias="time", max_length=40)] = "",
    hours: Field = "",
    verified: Field = "",
    rating: Field = "0",
    page: Annotated[int, Query(ge=1, le=search.MAX_PAGE)] = 1,
) -> Response:
    """The search form and the chargers it finds, nearest first (anyone may search)."""
    _ = visitor.gettext
    market = state.settings.marketplace
    searched = bool(request.query_params)
    form = {
        "lat": lat or f"{market.search_centre_lat:.4f}",
        "lon": lon or f"{market.search_centre_lon:.4f}",
        "radius_km": radius_km,
        "connector": connector,
        "min_kw": min_kw,
        "max_price": max_price,
        "mode": mode,
        "when": when,
        "date": day,
        "time": at,
        "hours": hours or str(DEFAULT_HOURS),
        "verified": verified,
        "rating": rating,
    }
    found: schemas.SearchPage | None = None
    error: FormError | None = None
    try:
        found = await _search(visitor, state, form, page)
    except FormError as exc:
        error = exc
    except InvalidRequest as exc:
        # The API's own rule between parameters, named by its field: shown on the form.
        error = FormError(str(exc.field or "when"), _("Please check: %(why)s") % {"why": exc})
    tiles = market.map_tile_url
    origin = tile_origin(tiles)
    assets = leaflet(state)
    markers = json.dumps(
        [
            {"lat": hit.latitude, "lon": hit.longitude, "name": hit.name, "id": hit.id}
            for hit in (found.items if found else [])
        ]
    )
    query = {k: v for k, v in form.items() if v}
    response = render(
        request,
        visitor,
        "search.html",
        status_code=422 if error else 200,
        form=form,
        found=found,
        error=error,
        searched=searched,
        page=page,
        connector_types=[c.value for c in ConnectorType],
        radii=RADII_KM,
        ratings=RATINGS,
        leaflet=assets,
        tiles=tiles,
        attribution=market.map_tile_attribution,
        markers=markers,
        more_url="?" + urlencode({**query, "page": page + 1}),
    )
    if assets is not None and origin is not None:
        response.headers["Content-Security-Policy"] = content_security_policy(images=(origin,))
    return response


async def _search(
    visitor: Visitor, state: State, form: dict[str, str], page: int
) -> schemas.SearchPage:
    """The form as ``GET /chargers``'s parameters, through that route's own handler."""
    _ = visitor.gettext
    lat = _number(form["lat"], "lat", _("Enter the latitude as a number."))
    lon = _number(form["lon"], "lon", _("Enter the longitude as a number."))
    if lat is None or not -90 <= lat <= 90:
        raise FormError("lat", _("The latitude is between -90 and 90."))
    if lon is None or not -180 <= lon <= 180:
        raise FormError("lon", _("The longitude is between -180 and 180."))
    radius = _number(form["radius_km"], "radius_km", _("Choose a distance."))
    if radius is None or not Decimal("0.01") <= radius <= Decimal(str(search.MAX_RADIUS_KM)):
        raise FormError("radius_km", _("Choose a distance."))
    connector_type = None
    if form["connector"]:
        try:
            connector_type = ConnectorType(form["connector"])
        except ValueError:
            raise FormError("connector", _("Choose a connector from the list.")) from None
    min_kw = _number(form["min_kw"], "min_kw", _("Enter the power in kW as a number.")) or 0
    if not 0 <= min_kw <= 400:
        raise FormError("min_kw", _("The power is between 0 and 400 kW."))
    pricing_mode = None
    if form["mode"]:
        try:
            pricing_mode = PricingMode(form["mode"])
        except ValueError:
            raise FormError("mode", _("Choose a way of pricing from the list.")) from None
    price = _number(form["max_price"], "max_price", _("Enter the price in rupees."))
    max_price_paise = None
    if price is not None:
        if price < 0 or price * 100 > schemas.MAX_PRICE_PAISE:
            raise FormError("max_price", _("Enter the price in rupees."))
        max_price_paise = int(price * 100)
    if form["rating"] not in RATINGS:
        raise FormError("rating", _("Choose a rating from the list."))
    start = end = None
    if form["when"] == "at":
        start, end = _window(visitor, form["date"], form["time"], form["hours"])
    elif form["when"] not in ("any", "now"):
        raise FormError("when", _("Choose when from the list."))
    return await chargers_api.search_chargers(
        state=state,
        lat=float(lat),
        lon=float(lon),
        radius_km=float(radius),
        connector_type=connector_type,
        min_kw=float(min_kw),
        max_price_paise=max_price_paise,
        pricing_mode=pricing_mode,
        available_now=form["when"] == "now",
        start=start,
        end=end,
        min_rating=float(form["rating"]),
        verified_host=form["verified"] == "1",
        page=page,
        page_size=PAGE_SIZE,
    )
