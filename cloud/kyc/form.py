"""The KYC multipart form, read and checked: one reader for ``POST /host/kyc`` and the host's
KYC page (cloud/web/host_kyc.py), so the size limits and identity rules live here once.

Files are read at most one byte past the limit and the whole body is bounded as it arrives
(a chunked body has no length to refuse it by); text fields other than the form's own are
refused, as are extra files.
"""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from cloud.errors import InvalidRequest, PayloadTooLarge
from cloud.kyc import identity, service
from cloud.kyc.models import DocumentKind

#: Multipart framing and the text fields around the documents.
FORM_OVERHEAD_BYTES = 16 * 1024
FILES = (DocumentKind.PAN_CARD, DocumentKind.ADDRESS_PROOF)
TEXT_FIELDS = ("pan", "aadhaar")


def _too_large(max_bytes: int, field: str = "body") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a KYC document is at most {max_bytes} bytes", field=field, max_bytes=max_bytes
    )


def _bounded(request: Request, body_max: int, doc_max: int) -> Request:
    """``request`` whose body stops with :class:`PayloadTooLarge` past ``body_max`` bytes."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > body_max:
                raise _too_large(doc_max)
        return message

    return Request(request.scope, receive)


async def read_kyc_form(
    request: Request, max_bytes: int, *, extra: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[DocumentKind, bytes]]:
    """The form's text fields (``pan``, ``aadhaar`` and the ``extra`` ones, e.g. a page's
    CSRF token) and files, each file at most ``max_bytes`` (413) — or 422 naming what is
    wrong with the form itself."""
    allowed = TEXT_FIELDS + extra
    body_max = 2 * max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_max:
        raise _too_large(max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send KYC as multipart/form-data", field="body")
    files: dict[DocumentKind, bytes] = {}
    texts: dict[str, str] = {}
    try:
        async with _bounded(request, body_max, max_bytes).form(
            max_files=len(FILES), max_fields=len(allowed)
        ) as form:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    if name not in allowed or name in texts:
                        raise InvalidRequest(f"unexpected form field {name!r}", field=name)
                    texts[name] = value
                    continue
                kind = next((k for k in FILES if k.value == name), None)
                if kind is None or kind in files:
                    raise InvalidRequest(f"unexpected file field {name!r}", field=name)
                data = await value.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise _too_large(max_bytes, name)
                files[kind] = data
    except (MultiPartException, HTTPException) as exc:
        raise InvalidRequest("the multipart form could not be read", field="body") from exc
    return texts, files


def checked_kyc(
    texts: dict[str, str], files: dict[DocumentKind, bytes]
) -> tuple[str, str | None, list[service.Upload]]:
    """PAN (checked), the Aadhaar number masked (``None`` when not given), and the two
    documents typed by their content; 422 naming the field otherwise."""
    try:
        pan = identity.check_pan(texts.get("pan", ""))
        aadhaar = texts.get("aadhaar")
        masked = None if aadhaar is None else identity.mask_aadhaar(aadhaar)
        uploads = []
        for kind in FILES:
            if kind not in files:
                raise identity.IdentityError(
                    f"the form needs a file in {kind.value}", field=kind.value
                )
            found = identity.check_document(files[kind], kind.value)
            uploads.append(service.Upload(kind, found.content_type, files[kind]))
    except identity.IdentityError as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None
    return pan, masked, uploads
