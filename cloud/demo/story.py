"""The demo's story, played unattended (``make demo SCENARIO=auto``), against a running cloud.

:func:`play_story` is the entry point (also for the end-to-end tests): a driver signs in,
finds the charger near the given point, books the next slot, pays with the dummy provider's
test card and unlocks it; energy flows; the site's link drops (:class:`~cloud.demo.link.Link`)
and charging goes on offline (the agent keeps the relay closed on its own authority and
records the session); the link returns and what happened offline syncs; the driver stops
the session, which is billed from the meter's delta and settled; the receipt and the GST
invoice are fetched and printed.

It talks to the cloud only over HTTP, to the simulated charger through its control interface
(:class:`SimControl`, or anything that is a :class:`Site`), and reads the session's ledger
entries from the database (the ledger has no driver-facing route). Every wait has a deadline
and fails with :class:`StoryFailed` saying what did not happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from cloud.demo.link import Link
from cloud.pg import close, connect
from cloud.settings import DbSettings

#: The dummy provider's card that always succeeds (cloud/payments/dummy.py).
TEST_CARD = "4111111111111111"
SLOT = timedelta(minutes=15)
#: A booking may start this far in the past (cloud/bookings/policy.py START_GRACE); the story
#: keeps a margin for the request's own time.
START_GRACE = timedelta(minutes=5)
REQUEST_MARGIN = timedelta(seconds=10)
#: A booking may be unlocked this early (cloud/sessions/unlock.py BOOKING_EARLY_S).
UNLOCK_EARLY = timedelta(minutes=10)
#: Energy that must flow through the meter in each phase before the story moves on.
PHASE_WH = 5
POLL_S = 0.2


class StoryFailed(RuntimeError):
    """A step of the story did not happen (the message says which)."""


class Site(Protocol):
    """The simulated charger behind the booked connector."""

    async def energy_wh(self) -> int: ...

    async def relay_closed(self) -> bool: ...


class SimControl:
    """A :class:`Site` over the simulator's control interface (firmware_sim/control.py:
    JSON over HTTP, ``GET /state``)."""

    def __init__(self, url: str, *, meter_unit: int = 1) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = f"http://{self.url}"
        self.meter_unit = meter_unit

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.request(method, f"{self.url}{path}", json=body)
        if answer.status_code != 200:
            raise StoryFailed(f"simulator {method} {path} answered {answer.status_code}")
        return answer.json()

    async def energy_wh(self) -> int:
        state = await self._call("GET", "/state")
        wh: float = state["meters"][str(self.meter_unit)]["values"]["energy_import_wh"]
        return round(wh)

    async def relay_closed(self) -> bool:
        return bool((await self._call("GET", "/state"))["relay_closed"])


@dataclass(frozen=True)
class StoryResult:
    """What the story ended with, as the API and the ledger show it."""

    #: ``GET /sessions/{id}`` (state ``stopped``).
    session: dict[str, Any]
    #: ``GET /sessions/{id}/receipt`` (billing_state ``settled``).
    receipt: dict[str, Any]
    #: The session's GST invoice, from ``GET /invoices``.
    invoice: dict[str, Any]
    #: The ledger entries of the session's bill, payment capture and refund (id order):
    #: dicts with ``txn_id``, ``account``, ``amount_paise``, ``source``, ``memo``.
    ledger: list[dict[str, Any]]
    booking: dict[str, Any]
    payment: dict[str, Any]
    #: The meter's import register when the relay closed and after it opened again.
    meter_start_wh: int
    meter_stop_wh: int


def booking_slot(now: datetime) -> tuple[datetime, datetime]:
    """The slot a driver arriving ``now`` books: from the current 15-minute boundary when it
    is within the start grace, else from the next one (unlocked up to :data:`UNLOCK_EARLY`
    before it starts: :func:`play_story` waits the few seconds it may be further away)."""
    floor = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    start = floor if now - floor <= START_GRACE - REQUEST_MARGIN else floor + SLOT
    return start, start + 2 * SLOT


def _rupees(paise: int) -> str:
    return f"Rs {paise // 100}.{paise % 100:02d}"


def format_receipt(result: StoryResult) -> str:
    """The receipt as the demo prints it: the bill line by line, how it was paid, the invoice."""
    r = result.receipt
    ledger_sum = sum(e["amount_paise"] for e in result.ledger)
    rows = [
        "=" * 60,
        "ChargeMitra receipt",
        f"  session   {r['session_id']}",
        f"  charged   {r['started_at']} .. {r['stopped_at']}",
        f"  meter     {r['meter_start_wh']} Wh -> {r['meter_stop_wh']} Wh = {r['energy_wh']} Wh",
    ]
    rows += [
        f"  {line['kind'] + ' (' + str(line['quantity']) + ' ' + line['unit'] + ')':<40} "
        f"{_rupees(line['amount_paise']):>14}"
        for line in r["lines"]
    ]
    rows += [
        f"  {'taxable value':<40} {_rupees(r['taxable_paise']):>14}",
        f"  {'GST (SAC ' + r['sac'] + ')':<40} {_rupees(r['gst_paise']):>14}",
        f"  {'TOTAL':<40} {_rupees(r['total_paise']):>14}",
        f"  {'prepaid':<40} {_rupees(r['prepaid_paise']):>14}",
        f"  {'captured':<40} {_rupees(r['captured_paise']):>14}",
        f"  {'refunded':<40} {_rupees(r['refunded_paise']):>14}",
        f"  invoice   {result.invoice['serial']} ({result.invoice['financial_year']})",
        f"  ledger    {len(result.ledger)} entries, balanced: {ledger_sum == 0}",
        "=" * 60,
    ]
    return "\n".join(rows)


async def _wait(check: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise StoryFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def _ok(answer: httpx.Response, what: str, *codes: int) -> Any:
    if answer.status_code not in (codes or (200,)):
        raise StoryFailed(
            f"{what}: {answer.request.method} {answer.request.url.path} answered "
            f"{answer.status_code}: {answer.text[:300]}"
        )
    return answer.json()


async def _ledger(db_url: str, session_id: str, payment_id: str) -> list[dict[str, Any]]:
    conn = await connect(DbSettings(url=db_url))
    try:
        rows = await conn.fetch(
            "SELECT txn_id, account, amount_paise, source, memo FROM ledger_entries "
            "WHERE session_id = (SELECT id FROM sessions WHERE device_session_id = $1) "
            "OR payment_id = $2 "
            "OR refund_id IN (SELECT id FROM refunds WHERE payment_id = $2) ORDER BY id",
            session_id,
            payment_id,
        )
    finally:
        await close(conn)
    return [
        {k: row[k] for k in ("txn_id", "account", "amount_paise", "source", "memo")} for row in rows
    ]


async def play_story(  # noqa: PLR0915 -- the story reads top to bottom, one step a paragraph
    api_url: str,
    *,
    db_url: str,
    link: Link,
    site: Site,
    charger_id: str,
    driver_email: str,
    password: str,
    near: tuple[float, float],
    say: Callable[[str], None] = print,
    timeout_s: float = 90.0,
    phase_wh: int = PHASE_WH,
) -> StoryResult:
    """Play the story against the cloud at ``api_url`` on ``charger_id`` (found by search
    near ``near``, lat/lon); return what it ended with. ``say`` narrates each step;
    ``phase_wh`` is the energy each phase (online, offline) lets through the meter; every
    wait gives up after ``timeout_s``.

    Raises :class:`StoryFailed` naming the step that did not happen.
    """
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        say(f"1. {driver_email} signs in")
        login = {"email": driver_email, "password": password}
        tokens = _ok(await http.post("/auth/login", json=login), "sign in")
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}

        start, end = booking_slot(datetime.now(UTC))
        lat, lon = near
        found = _ok(
            await http.get(
                "/chargers",
                params={
                    "lat": lat,
                    "lon": lon,
                    "radius_km": 5,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                },
            ),
            "search",
        )
        hit = next((c for c in found["items"] if c["id"] == charger_id), None)
        if hit is None:
            raise StoryFailed(
                f"search near {lat},{lon} did not find charger {charger_id} free "
                f"from {start:%H:%M} to {end:%H:%M}"
            )
        say(
            f"2. finds {hit['name']!r} ({hit['distance_m'] / 1000:.1f} km away) free "
            f"{start:%H:%M}-{end:%H:%M} UTC"
        )

        booking = _ok(
            await http.post(
                "/bookings",
                headers=auth,
                json={
                    "charger_id": charger_id,
                    "connector": 1,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "note": "make demo SCENARIO=auto",
                },
            ),
            "book",
            201,
        )
        say(
            f"3. books it: booking {booking['id']} {booking['status']}, "
            f"up to {_rupees(booking['amount_paise'])}"
        )
        order = _ok(
            await http.post(f"/bookings/{booking['id']}/payment", headers=auth),
            "open the payment",
            201,
        )
        payment = _ok(
            await http.post(
                f"/payments/{order['id']}/verify", headers=auth, json={"card_number": TEST_CARD}
            ),
            "pay",
        )
        say(
            f"4. pays {_rupees(order['amount_paise'])} with the dummy provider's test card: "
            f"payment {payment['id']} {payment['status']}"
        )

        early = start - UNLOCK_EARLY - datetime.now(UTC)
        if early > timedelta(0):
            # Booked just past the start grace: the slot opens for unlocking in seconds.
            await asyncio.sleep(early.total_seconds() + 1)
        unlock = _ok(
            await http.post(
                f"/chargers/{charger_id}/sessions",
                headers=auth,
                json={"connector": 1, "booking_id": booking["id"]},
            ),
            "unlock",
            201,
        )
        session_id: str = unlock["session_id"]
        meter_start = await site.energy_wh()
        say(f"5. unlocks it: session {session_id}, relay closed, meter at {meter_start} Wh")

        async def flowed_past(mark: int) -> bool:
            return await site.energy_wh() >= mark + phase_wh

        await _wait(
            lambda: flowed_past(meter_start), "energy through the meter", timeout_s=timeout_s
        )
        say(f"6. charging: meter at {await site.energy_wh()} Wh")

        async def charger_online(*, want: bool) -> bool:
            view = _ok(await http.get(f"/chargers/{charger_id}"), "charger view")
            return bool(view["status"]["online"]) is want

        await link.drop()
        await _wait(
            lambda: charger_online(want=False),
            "the cloud to see the site offline",
            timeout_s=timeout_s,
        )
        offline_mark = await site.energy_wh()
        say(
            f"7. the site's link drops: the cloud shows the charger offline (meter "
            f"{offline_mark} Wh)"
        )
        await _wait(
            lambda: flowed_past(offline_mark), "energy to flow while offline", timeout_s=timeout_s
        )
        if not await site.relay_closed():
            raise StoryFailed("the relay opened when the link dropped")
        offline_wh = await site.energy_wh()
        say(f"8. charging continues offline: meter at {offline_wh} Wh, relay closed")

        await link.restore()
        await _wait(lambda: charger_online(want=True), "the site back online", timeout_s=timeout_s)

        async def synced() -> bool:
            seen = _ok(await http.get(f"/sessions/{session_id}", headers=auth), "session")
            return bool(seen["energy_wh"] >= offline_wh - meter_start)

        await _wait(synced, "the offline part of the session to sync", timeout_s=timeout_s)
        seen = _ok(await http.get(f"/sessions/{session_id}", headers=auth), "session")
        say(
            f"9. the link returns: what the agent recorded offline syncs (the session at "
            f"{seen['energy_wh']} Wh in the cloud)"
        )

        _ok(await http.post(f"/sessions/{session_id}/stop", headers=auth), "stop", 202)

        async def stopped() -> bool:
            seen = _ok(await http.get(f"/sessions/{session_id}", headers=auth), "session")
            return seen["state"] == "stopped" and not await site.relay_closed()

        await _wait(stopped, "the session to stop and the relay to open", timeout_s=timeout_s)
        meter_stop = await site.energy_wh()
        say(f"10. the driver stops it: relay open, meter at {meter_stop} Wh")

        async def settled() -> bool:
            answer = await http.get(f"/sessions/{session_id}/receipt", headers=auth)
            return answer.status_code == 200 and answer.json()["billing_state"] == "settled"

        await _wait(settled, "the session to sync and settle", timeout_s=timeout_s)
        session = _ok(await http.get(f"/sessions/{session_id}", headers=auth), "session")
        receipt = _ok(await http.get(f"/sessions/{session_id}/receipt", headers=auth), "receipt")
        say(
            f"11. it is billed from the meter's delta ({session['energy_wh']} Wh): "
            f"{_rupees(receipt['total_paise'])}, the prepayment captured and the rest "
            f"refunded"
        )

        invoice: dict[str, Any] | None = None

        async def invoiced() -> bool:
            nonlocal invoice
            page = _ok(await http.get("/invoices", headers=auth, params={"limit": 100}), "invoices")
            invoice = next((i for i in page["items"] if i["session_id"] == session_id), None)
            return invoice is not None

        await _wait(invoiced, "the session's GST invoice", timeout_s=timeout_s)
        assert invoice is not None  # set by invoiced()
        ledger = await _ledger(db_url, session_id, payment["id"])
    result = StoryResult(
        session=session,
        receipt=receipt,
        invoice=invoice,
        ledger=ledger,
        booking=booking,
        payment=payment,
        meter_start_wh=meter_start,
        meter_stop_wh=meter_stop,
    )
    say(format_receipt(result))
    return result
