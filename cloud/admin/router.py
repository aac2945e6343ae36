"""The admin console's routes: users and the platform's figures (admins only)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from cloud.accounts.models import Role
from cloud.admin import figures, schemas, users
from cloud.audit.actor import AdminActor
from cloud.deps import AdminUser, Db
from cloud.errors import InvalidRequest
from cloud.openapi import problems
from cloud.schemas import PathId

router = APIRouter(tags=["admin"])

#: The longest range of days one figures call covers.
MAX_DAYS = 366
#: Figures are for days in this span (a day outside it is a typo, and year 1 minus the
#: India offset has no UTC instant).
EARLIEST, LATEST = date(2000, 1, 1), date(2100, 12, 31)


def _user_out(view: users.UserView) -> schemas.AdminUserOut:
    u = view.user
    return schemas.AdminUserOut(
        id=u.id,
        email=u.email,
        phone=u.phone,
        name=u.name,
        roles=sorted(view.roles),
        disabled_at=u.disabled_at,
        created_at=u.created_at,
        host_id=view.host.id if view.host else None,
        kyc_status=view.host.kyc_status if view.host else None,
    )


@router.get("/admin/users")
async def admin_users(
    *,
    db: Db,
    _admin: AdminUser,
    q: Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")] = None,
    role: Role | None = None,
    disabled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> schemas.AdminUserList:
    """Users, newest first: ``q`` matches a fragment of the email, phone or name (case
    does not matter), ``role`` one of their roles, ``disabled`` whether the account is."""
    found = await users.find_users(
        db, users.UserFilter(text=q, role=role, disabled=disabled, limit=limit, offset=offset)
    )
    return schemas.AdminUserList(items=[_user_out(v) for v in found], limit=limit, offset=offset)


@router.get("/admin/users/{user_id}")
async def admin_user(user_id: PathId, db: Db, _admin: AdminUser) -> schemas.AdminUserOut:
    return _user_out(await users.user_view(db, user_id))


@router.post("/admin/users/{user_id}/disable", responses=problems(409))
async def disable_user(
    user_id: PathId, body: schemas.DisableIn, db: Db, actor: AdminActor
) -> schemas.AdminUserOut:
    """Disable an account: its access tokens stop working on every API instance at once,
    its refresh tokens are revoked, its open streams close. 409 for the caller's own."""
    view = await users.set_disabled(
        db, actor, user_id=user_id, disabled=True, reason=body.reason, now=datetime.now(UTC)
    )
    return _user_out(view)


@router.post("/admin/users/{user_id}/enable")
async def enable_user(user_id: PathId, db: Db, actor: AdminActor) -> schemas.AdminUserOut:
    """Enable a disabled account (it signs in again: tokens from before stay refused)."""
    view = await users.set_disabled(
        db, actor, user_id=user_id, disabled=False, reason=None, now=datetime.now(UTC)
    )
    return _user_out(view)


@router.put("/admin/users/{user_id}/roles", responses=problems(409))
async def set_user_roles(
    user_id: PathId, body: schemas.RolesIn, db: Db, actor: AdminActor
) -> schemas.AdminUserOut:
    """Give the account exactly these roles (from the next request on, on every instance).
    A new host gets a host profile; 409 for taking away the caller's own admin role."""
    view = await users.set_roles(db, actor, user_id=user_id, roles=frozenset(body.roles))
    return _user_out(view)


def _figures_out(f: figures.Figures) -> schemas.PlatformFigures:
    days = [
        schemas.DayFiguresOut(
            day=d.day,
            sessions=d.sessions,
            energy_wh=d.energy_wh,
            energy_kwh=d.energy_wh / 1000,
            revenue_paise=d.revenue_paise,
            commission_paise=d.commission_paise,
            gst_paise=d.gst_paise,
        )
        for d in f.days
    ]
    energy_wh = sum(d.energy_wh for d in f.days)
    return schemas.PlatformFigures(
        from_date=f.start,
        to_date=f.end,
        timezone=figures.REPORT_ZONE.key,
        totals=schemas.FigureTotals(
            sessions=sum(d.sessions for d in f.days),
            energy_wh=energy_wh,
            energy_kwh=energy_wh / 1000,
            revenue_paise=sum(d.revenue_paise for d in f.days),
            commission_paise=sum(d.commission_paise for d in f.days),
            gst_paise=sum(d.gst_paise for d in f.days),
        ),
        days=days,
        chargers=[schemas.ChargerFiguresOut(**vars_of(c)) for c in f.chargers],
        top_cities=[schemas.CityFiguresOut(**vars_of(c)) for c in f.top_cities],
        online_ratio=f.online_ratio,
    )


def vars_of(row: figures.ChargerFigures | figures.CityFigures) -> dict[str, object]:
    return {name: getattr(row, name) for name in row.__slots__}


# A spreadsheet reads a cell starting with one of these as a formula (OWASP's "CSV
# injection"); chargers' names and cities are the host's text, so such a cell gets a leading
# apostrophe and opens as the text it is. Numbers are ours and are written as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: object) -> object:
    """``value`` safe for a spreadsheet cell (the comment above)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv(out: schemas.PlatformFigures, table: str) -> str:
    rows: list[dict[str, object]] = {
        "days": [d.model_dump() for d in out.days],
        "chargers": [c.model_dump() for c in out.chargers],
        "cities": [c.model_dump() for c in out.top_cities],
    }[table]
    models: dict[str, type[BaseModel]] = {
        "days": schemas.DayFiguresOut,
        "chargers": schemas.ChargerFiguresOut,
        "cities": schemas.CityFiguresOut,
    }
    fields = models[table].model_fields
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: neutralised(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


@router.get(
    "/admin/figures",
    response_model=schemas.PlatformFigures,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def platform_figures(
    *,
    request: Request,
    db: Db,
    _admin: AdminUser,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    output: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
    table: Literal["days", "chargers", "cities"] = "days",
) -> schemas.PlatformFigures | Response:
    """The platform's figures for the days ``from`` to ``to`` (``YYYY-MM-DD``, inclusive,
    India time): per day sessions, energy, revenue (GST included), commission and GST
    collected; per charger utilisation and online ratio; the top cities; the totals.

    CSV instead of JSON with ``format=csv`` or ``Accept: text/csv``: one ``table``
    (``days``, ``chargers`` or ``cities``). Rules the parameters' schemas cannot state (422
    naming the parameter): ``from`` is not after ``to``, the range is at most 366 days, both
    within 2000-2100."""
    for name, day in (("from", start), ("to", end)):
        if not EARLIEST <= day <= LATEST:
            raise InvalidRequest(f"{name} must be between {EARLIEST} and {LATEST}", field=name)
    if end < start:
        raise InvalidRequest("to must not be before from", field="to")
    if end - start >= timedelta(days=MAX_DAYS):
        raise InvalidRequest(f"a range is at most {MAX_DAYS} days", field="to")
    out = _figures_out(await figures.figures(db, start, end, now=datetime.now(UTC)))
    accept = request.headers.get("accept", "")
    if output == "csv" or (output is None and "text/csv" in accept):
        name = f"chargemitra-{table}-{start}-{end}.csv"
        return Response(
            _csv(out, table),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return out
