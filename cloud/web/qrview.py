"""What the QR page shows, read cheaply: the listing kept for a few seconds, the live state
read on every visit.

A charger's listing — name, address, photos, price, connectors, opening hours, rating, the
host's badge — changes when a host edits it or an admin moderates it, not between two scans
of its sticker; reading it costs five queries (cloud/chargers/access.py ``charger_by_code``
and ``public_view``). The page keeps each listing for :data:`TTL_S` seconds per API process
(on the app's ``state``, so each app has its own), keyed by the canonical short code. What
must be live is read on every visit through cloud/chargers/status.py ``live_state``: the
device's presence and each connector's state (two queries), without the meter readings the
page does not show. A listing taken down (suspended, unlisted) may still be shown for up to
:data:`TTL_S` seconds by a process that had it; everything after the page — quote, payment,
unlock — reads the charger again and refuses it. A missing code is not kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State as StarletteState

from cloud.chargers import access, qr, schemas, views

#: How long a listing is kept for the QR page (seconds).
TTL_S = 10.0
#: Listings kept at most (the oldest go first): bounded memory whatever is scanned.
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Listing:
    public: schemas.ChargerPublic
    device_id: str | None
    expires: float


def _cache(app_state: StarletteState) -> dict[str, Listing]:
    found: dict[str, Listing] | None = getattr(app_state, "qr_listings", None)
    if found is None:
        found = {}
        app_state.qr_listings = found
    return found


async def listing(db: AsyncSession, app_state: StarletteState, code: str) -> Listing:
    """The listing behind ``code`` (NotFound as ``charger_by_code``), kept for TTL_S."""
    key = qr.normalize_short_code(code) or code
    cache = _cache(app_state)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and hit.expires > now:
        return hit
    charger = await access.charger_by_code(db, code)
    found = Listing(
        public=await views.public_view(db, charger),
        device_id=charger.device_id,
        expires=now + TTL_S,
    )
    if len(cache) >= MAX_ENTRIES:
        for stale in [k for k, v in cache.items() if v.expires <= now] or list(cache)[:1]:
            del cache[stale]
    cache[key] = found
    return found
