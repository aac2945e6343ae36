"""RazorpayX payouts over HTTP: a host's contact and fund account, then payouts to it.

Why httpx and not the ``razorpay`` SDK the rest of :mod:`cloud.payments.razorpay_provider`
uses: the SDK (2.0) has no RazorpayX resources — no ``/v1/contacts``, no ``/v1/payouts`` —
and its ``fund_account`` resource is the payments API's, tied to a *customer*, not
RazorpayX's tied to a *contact*. The calls are three JSON POSTs with the same HTTP Basic auth
(key id, key secret) on the same host, so a small async client does them with our timeout.

What RazorpayX requires and this module does:
- a contact (``type`` ``vendor``, our host id as ``reference_id``) and a fund account for it
  (``bank_account``: holder name, IFSC, account number; or ``vpa``: the address), made once per
  destination and stored by the caller (cloud/payouts/service.py);
- a payout from the platform's RazorpayX account (``account_number``, a setting) to the fund
  account: ``amount`` integer paise, ``currency`` INR, ``mode`` (:func:`mode`), ``purpose``
  ``payout``, ``reference_id`` our payout id, and the ``X-Payout-Idempotency`` header with our
  payout id, so a retry after a lost answer returns the same payout instead of paying again.

Errors: a 4xx is a definite refusal — nothing was paid (``rejected``; ``invalid-destination``
for a contact or fund account) — while a 5xx, a timeout or an unreadable answer leaves the
outcome unknown (``server-error`` / ``unreachable``): the payout stays ``processing`` and is
retried with the same key.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from cloud.errors import PaymentProviderError
from cloud.payments.models import PayoutAccountKind
from cloud.payments.provider import (
    DestinationRefs,
    PayoutDestination,
    PayoutRequest,
    PayoutResult,
)

log = logging.getLogger(__name__)

NAME = "razorpay"
IDEMPOTENCY_HEADER = "X-Payout-Idempotency"
#: IMPS carries at most ₹5,00,000 a transfer; above it, NEFT.
IMPS_MAX_PAISE = 5_00_000_00


def mode(kind: PayoutAccountKind | None, amount_paise: int) -> str:
    """RazorpayX's ``mode`` for a payout: UPI to a VPA, IMPS (instant) to a bank account up to
    its limit, NEFT above it."""
    if kind is PayoutAccountKind.VPA:
        return "UPI"
    return "IMPS" if amount_paise <= IMPS_MAX_PAISE else "NEFT"


class RazorpayX:
    """Contacts, fund accounts and payouts at RazorpayX."""

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        account_number: str,
        base_url: str = "https://api.razorpay.com",
        timeout_s: float = 15.0,
    ) -> None:
        self._account_number = account_number
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(key_id, key_secret),
            timeout=timeout_s,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        refused: str,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            answer = await self._http.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.error("razorpayx %s unreachable: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="unreachable") from exc
        if answer.status_code >= 500:
            log.error("razorpayx %s failed: %s %s", operation, answer.status_code, answer.text)
            raise PaymentProviderError(NAME, operation, code="server-error")
        if answer.status_code >= 400:
            log.warning("razorpayx %s refused: %s %s", operation, answer.status_code, answer.text)
            raise PaymentProviderError(NAME, operation, code=refused)
        try:
            data = answer.json()
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise ValueError("no id")
        except ValueError as exc:
            # Accepted, but unreadable (a proxy's page): what happened is unknown.
            log.error("razorpayx %s answered unreadably: %s", operation, answer.text[:200])
            raise PaymentProviderError(NAME, operation, code="server-error") from exc
        return data

    async def destination(self, destination: PayoutDestination) -> DestinationRefs:
        if destination.kind is PayoutAccountKind.STRIPE_ACCOUNT:
            raise PaymentProviderError(NAME, "fund account", code="invalid-destination")
        contact_ref = destination.contact_ref
        if contact_ref is None:
            contact = await self._post(
                "contact",
                "/v1/contacts",
                {
                    "name": destination.holder_name,
                    "type": "vendor",
                    "reference_id": destination.host_id,
                },
                refused="invalid-destination",
            )
            contact_ref = str(contact["id"])
        account: dict[str, Any] = {"contact_id": contact_ref}
        if destination.kind is PayoutAccountKind.VPA:
            account |= {"account_type": "vpa", "vpa": {"address": destination.vpa}}
        else:
            account |= {
                "account_type": "bank_account",
                "bank_account": {
                    "name": destination.holder_name,
                    "ifsc": destination.ifsc,
                    "account_number": destination.account_number,
                },
            }
        fund = await self._post(
            "fund account", "/v1/fund_accounts", account, refused="invalid-destination"
        )
        return DestinationRefs(contact_ref=contact_ref, destination_ref=str(fund["id"]))

    async def payout(self, request: PayoutRequest) -> PayoutResult:
        if not self._account_number:
            # No RazorpayX account configured: nothing can be sent (a definite refusal).
            raise PaymentProviderError(NAME, "payout", code="not-supported")
        if not request.destination.startswith("fa_"):
            raise PaymentProviderError(NAME, "payout", code="invalid-destination")
        payout = await self._post(
            "payout",
            "/v1/payouts",
            {
                "account_number": self._account_number,
                "fund_account_id": request.destination,
                "amount": request.amount_paise,
                "currency": request.currency,
                "mode": mode(request.kind, request.amount_paise),
                "purpose": "payout",
                # Held at RazorpayX (status ``queued``) rather than refused while the
                # platform's balance is short: it goes out once the account is topped up.
                "queue_if_low_balance": True,
                "reference_id": request.reference,
                "narration": "ChargeMitra payout",
            },
            refused="rejected",
            headers={IDEMPOTENCY_HEADER: request.reference},
        )
        return PayoutResult(payout_ref=str(payout["id"]), status=str(payout.get("status", "")))
