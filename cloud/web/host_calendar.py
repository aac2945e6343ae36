"""A charger's availability calendar on the host's pages: the weekly opening hours and the
blocked periods (``/app/host/chargers/{id}/availability``).

The week is a form of up to ``SLOTS`` opening windows a day (local times, ``HH:MM``,
``24:00`` for midnight; both fields empty: no window), turned into ``AvailabilityIn`` and
saved by the charger service's ``set_availability`` — what ``PUT
/chargers/{id}/availability`` does. Blocked periods are added (``BlockedPeriodIn``, the
times read in the charger's own zone) and removed through the same service as ``POST`` and
``DELETE /chargers/{id}/blocked-periods``. Another host's charger is the 404 page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Path, Request, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.chargers import access, editing, schemas, views
from cloud.deps import Db, State
from cloud.errors import CloudError, NotFound
from cloud.problems import problem_for
from cloud.schemas import PathId
from cloud.web.host import host_or_answer
from cloud.web.render import PageVisitor, Visitor, redirect, render
from cloud.web.router import CsrfField, explain

router = APIRouter(include_in_schema=False)

#: Opening windows offered per weekday (more than the schedule holds are shown too).
SLOTS = 2
_SLOT_FIELD = re.compile(r"^(open|close)_([0-6])_([1-9])$")
PeriodId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Stamp = Annotated[str, Form(max_length=20)]


def _week(windows: list[schemas.WindowOut]) -> list[list[tuple[str, str]]]:
    """Per weekday (Monday first) its windows as text, padded to ``SLOTS`` empty ones."""
    days: list[list[tuple[str, str]]] = [[] for _ in range(7)]
    for w in windows:
        shown = schemas.WindowOut.model_validate(w).model_dump(mode="json")
        days[w.weekday].append((shown["opens_at"], shown["closes_at"]))
    for day in days:
        day.extend([("", "")] * max(0, SLOTS - len(day)))
    return days


def _posted_week(form: dict[str, str]) -> tuple[list[dict[str, Any]], list[list[tuple[str, str]]]]:
    """The windows typed (a slot with both fields empty is none), and the form as typed."""
    slots: dict[tuple[int, int], dict[str, str]] = {}
    for name, value in form.items():
        match = _SLOT_FIELD.fullmatch(name)
        if match:
            slots.setdefault((int(match[2]), int(match[3])), {})[match[1]] = value.strip()
    typed: list[list[tuple[str, str]]] = [[] for _ in range(7)]
    windows: list[dict[str, Any]] = []
    for (day, _slot), pair in sorted(slots.items()):
        opens, closes = pair.get("open", ""), pair.get("close", "")
        typed[day].append((opens, closes))
        if opens or closes:
            windows.append({"weekday": day, "opens_at": opens, "closes_at": closes})
    return windows, typed


async def _page(
    request: Request,
    visitor: Visitor,
    db: AsyncSession,
    host: Principal,
    charger_id: str,
    *,
    week: list[list[tuple[str, str]]] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        charger = await access.editable_charger(db, host, charger_id)
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    view = await views.host_view(db, charger)
    _ = visitor.gettext
    names = [
        _("Monday"),
        _("Tuesday"),
        _("Wednesday"),
        _("Thursday"),
        _("Friday"),
        _("Saturday"),
        _("Sunday"),
    ]
    return render(
        request,
        visitor,
        "host_calendar.html",
        status_code=status_code,
        charger=view,
        week=week or _week(view.availability.windows),
        days=names,
        error=error,
    )


@router.get("/app/host/chargers/{charger_id}/availability")
async def calendar(request: Request, visitor: PageVisitor, db: Db, charger_id: PathId) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    return await _page(request, visitor, db, host, charger_id)


def _why(visitor: Visitor, exc: ValidationError) -> str:
    _ = visitor.gettext
    for error in exc.errors():
        if "opens_at" in error["msg"] or "start must be" in error["msg"]:
            return _("Each opening must start before it closes (24:00 is midnight).")
    return _(
        "Enter times as HH:MM in 24-hour time (for example 08:00 and 20:30; 24:00 is "
        "midnight), and dates as shown."
    )


async def _refused(
    request: Request,
    visitor: Visitor,
    state: State,
    host: Principal,
    charger_id: str,
    *,
    why: str,
    status_code: int,
    week: list[list[tuple[str, str]]] | None = None,
) -> Response:
    async with state.sessions() as db:
        return await _page(
            request, visitor, db, host, charger_id, week=week, error=why, status_code=status_code
        )


@router.post("/app/host/chargers/{charger_id}/availability")
async def save_week(
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    posted = await request.form()
    form = {k: v[:10] for k, v in posted.items() if isinstance(v, str)}
    windows, typed = _posted_week(form)
    try:
        body = schemas.AvailabilityIn.model_validate({"windows": windows})
        async with state.sessions() as db, db.begin():
            await editing.set_availability(db, host, charger_id, body)
    except ValidationError as exc:
        return await _refused(
            request,
            visitor,
            state,
            host,
            charger_id,
            why=_why(visitor, exc),
            status_code=422,
            week=typed,
        )
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except CloudError as exc:
        return await _refused(
            request,
            visitor,
            state,
            host,
            charger_id,
            why=explain(visitor, exc),
            status_code=problem_for(exc)[0],
            week=typed,
        )
    return redirect(f"/app/host/chargers/{charger_id}/availability", visitor)


def _local(text: str, zone: ZoneInfo) -> datetime | str:
    """``2026-12-24T18:00`` (a datetime-local field) in the charger's zone; the text back
    when it is not one (the schema then refuses it)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


@router.post("/app/host/chargers/{charger_id}/blocked-periods")
async def block(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    start: Stamp = "",
    end: Stamp = "",
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        async with state.sessions() as db, db.begin():
            charger = await access.editable_charger(db, host, charger_id, lock=True)
            zone = ZoneInfo(charger.timezone)
            fields: dict[str, Any] = {
                "start": _local(start, zone),
                "end": _local(end, zone),
                "reason": reason.strip(),
            }
            body = schemas.BlockedPeriodIn.model_validate(fields)
            await editing.add_blocked_period(db, host, charger_id, body, now=datetime.now(UTC))
    except ValidationError as exc:
        return await _refused(
            request, visitor, state, host, charger_id, why=_why(visitor, exc), status_code=422
        )
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except CloudError as exc:
        return await _refused(
            request,
            visitor,
            state,
            host,
            charger_id,
            why=explain(visitor, exc),
            status_code=problem_for(exc)[0],
        )
    return redirect(f"/app/host/chargers/{charger_id}/availability", visitor)


@router.post("/app/host/chargers/{charger_id}/blocked-periods/{period_id}/delete")
async def unblock(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    period_id: PeriodId,
    csrf: CsrfField = "",
) -> Response:
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        async with state.sessions() as db, db.begin():
            await editing.delete_blocked_period(db, host, charger_id, period_id)
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    return redirect(f"/app/host/chargers/{charger_id}/availability", visitor)
