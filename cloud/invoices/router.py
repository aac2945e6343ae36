"""``GET /invoices``, ``GET /invoices/{id}``, ``GET /invoices/{id}.pdf``, and a host's GST
registration (``GET|PUT|DELETE /host/gst-registration``).

Who may read what is :mod:`cloud.invoices.service`'s (its driver, the charger's host, an
admin; 404 for anyone else); issuing is not a route: the billing flow calls
:func:`cloud.invoices.service.issue_invoice` when it bills a session.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.deps import CurrentUser, Db, HostUser
from cloud.invoices import pdf, service
from cloud.invoices.models import Invoice
from cloud.invoices.schemas import (
    GstRegistrationIn,
    GstRegistrationOut,
    InvoiceList,
    InvoiceOut,
)
from cloud.openapi import problems
from cloud.schemas import PathId

router = APIRouter(tags=["invoices"])


async def _out(db: AsyncSession, invoice: Invoice) -> InvoiceOut:
    return InvoiceOut.of(
        invoice, session_id=await service.session_public_id(db, invoice.session_id)
    )


# Before /invoices/{invoice_id}: that template would take "X.pdf" as an id (and refuse it).
@router.get(
    "/invoices/{invoice_id}.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **problems(401, 404, 422)},
)
async def get_invoice_pdf(invoice_id: PathId, db: Db, principal: CurrentUser) -> Response:
    """The invoice (or credit note) as a one-page A4 PDF, to download or print."""
    invoice = await service.get_invoice(db, principal, invoice_id)
    original = None
    if invoice.original_id is not None:
        original = await service.get_invoice(db, principal, invoice.original_id)
    serial = original.serial if original is not None else None
    # fpdf2 is synchronous and takes some milliseconds: off the event loop.
    body = await asyncio.to_thread(pdf.render, invoice, original_serial=serial)
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{invoice.serial.replace("/", "-")}.pdf"'
        },
    )


@router.get("/invoices/{invoice_id}", responses=problems(401, 404, 422))
async def get_invoice(invoice_id: PathId, db: Db, principal: CurrentUser) -> InvoiceOut:
    """A tax invoice or credit note with its Rule 46 particulars."""
    return await _out(db, await service.get_invoice(db, principal, invoice_id))


@router.get("/invoices", responses=problems(401, 422))
async def list_invoices(
    db: Db,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> InvoiceList:
    """The caller's invoices and credit notes, newest first: as a driver (the recipient), as
    a host (of their chargers' sessions); an admin's: all."""
    invoices = await service.list_invoices(db, principal, limit=limit, offset=offset)
    return InvoiceList(items=[await _out(db, i) for i in invoices], limit=limit, offset=offset)


# --- a host's GST registration ---------------------------------------------------------------


@router.get("/host/gst-registration", responses=problems(404))
async def get_gst_registration(db: Db, user: HostUser) -> GstRegistrationOut:
    """The caller's GST registration as a host (``gst_registered`` false without one)."""
    return GstRegistrationOut.of(await service.registration(db, user.user_id))


@router.put("/host/gst-registration", responses=problems(404, 409))
async def put_gst_registration(
    db: Db, user: HostUser, body: GstRegistrationIn
) -> GstRegistrationOut:
    """Register the caller's GSTIN: they become the supplier of record of the sessions billed
    from now on, invoiced under this GSTIN, legal name and address in the GSTIN's own series
    (docs/cloud.md, "Invoices"). A GSTIN whose check character does not match is a 422
    naming ``gstin`` (JSON Schema cannot state a checksum); one another host holds, a 409."""
    host = await service.register_gstin(
        db,
        user.user_id,
        gstin=body.gstin,
        legal_name=body.legal_name,
        address=body.address,
        pincode=body.pincode,
    )
    return GstRegistrationOut.of(host)


@router.delete("/host/gst-registration", responses=problems(404))
async def delete_gst_registration(db: Db, user: HostUser) -> GstRegistrationOut:
    """The caller is no longer GST-registered: the platform is the supplier of record of the
    sessions billed from now on. Invoices already issued stay as issued."""
    return GstRegistrationOut.of(await service.unregister_gstin(db, user.user_id))
