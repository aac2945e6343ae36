"""A fake Razorpay API on loopback that holds our client to Razorpay's documented contract.

It checks what the real API requires of a request — HTTP Basic auth with the key id and
secret, JSON bodies, amounts as integer paise (at least 100, the API's minimum), ``INR``, a
receipt of at most 40 characters and (our rule, stricter than Razorpay's) never reused, a
capture equal to the authorized amount, ``X-Refund-Idempotency`` on refunds — and answers
in Razorpay's shapes and error format.

RazorpayX payouts: contacts (the same details answer the existing contact, as RazorpayX
does), fund accounts for a contact (a bank account with a valid IFSC and 5-35 digit number,
or a VPA), and payouts from :data:`PLATFORM_ACCOUNT` to a fund account — integer paise at
least 100, INR, a ``mode`` that fits the fund account (UPI only to a VPA), ``purpose``, a
``reference_id`` of at most 40 characters and the ``X-Payout-Idempotency`` header: the same
key with the same body answers the same payout, with another body is refused. A payout
starts ``processing``; :meth:`FakeRazorpay.payout_webhook` tells what became of it.
:attr:`FakeRazorpay.slow_payouts` makes the next payouts answer late (the payout is made,
the client times out). The signatures it makes (Checkout:
HMAC-SHA256(key_secret, ``order_id|payment_id``); webhooks: HMAC-SHA256(webhook_secret, raw
body)) are checked with the SDK's own ``razorpay.Utility`` before they are handed out, so the
fake and the SDK agree on the scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import razorpay  # type: ignore[import-untyped]

from tests.support.fake_http import Answer, FakeServer, Seen, serve

KEY_ID = "rzp_test_Fake0Key0Id0001"
KEY_SECRET = "fake-key-secret-" + "k" * 16
WEBHOOK_SECRET = "fake-webhook-secret-" + "w" * 16
#: The platform's RazorpayX account number (``CHARGEMITRA_PAYMENTS_RAZORPAYX_ACCOUNT_NUMBER``).
PLATFORM_ACCOUNT = "7878780080316316"
IFSC = re.compile(r"^[A-Z]{4}0[A-Z0-9]{6}$")
PAYOUT_MODES = {"IMPS", "NEFT", "RTGS", "UPI"}
PAYOUT_PURPOSES = {"refund", "cashback", "payout", "salary", "utility bill", "vendor bill"}


def _bad(description: str, status: int = 400) -> Answer:
    return Answer(status, {"error": {"code": "BAD_REQUEST_ERROR", "description": description}})


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(7)}"


@dataclass
class FakeRazorpay:
    server: FakeServer | None = None
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    refund_keys: dict[str, str] = field(default_factory=dict)
    receipts: set[str] = field(default_factory=set)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    fund_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: X-Payout-Idempotency key → (the body first sent with it, the payout id).
    payout_keys: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: The next this many payouts are made but answered this late (seconds): a timeout.
    slow_payouts: int = 0
    slow_s: float = 0.0
    utility: Any = field(default_factory=lambda: razorpay.Utility(None))

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def seen(self) -> list[Seen]:
        assert self.server is not None
        return self.server.seen

    # --- what the browser and Razorpay's servers would do ----------------------------------

    def authorize(self, order_id: str) -> tuple[str, str]:
        """The driver pays in Checkout: a payment authorized for the whole order; returns
        (payment id, Checkout signature)."""
        order = self.orders[order_id]
        payment_id = _id("pay")
        self.payments[payment_id] = {
            "id": payment_id,
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": "authorized",
            "order_id": order_id,
            "method": "upi",
            "captured": False,
            "amount_refunded": 0,
        }
        order["status"] = "attempted"
        signature = hmac.new(
            KEY_SECRET.encode(), f"{order_id}|{payment_id}".encode(), hashlib.sha256
        ).hexdigest()
        assert self.utility.verify_signature(f"{order_id}|{payment_id}", signature, KEY_SECRET)
        return payment_id, signature

    def webhook(
        self, event: str, *, payment_id: str, refund_id: str | None = None, status: str = ""
    ) -> tuple[bytes, dict[str, str]]:
        """A signed webhook delivery (body, headers) as Razorpay sends it."""
        payment = dict(self.payments[payment_id])
        if status:
            payment["status"] = status
        payload: dict[str, Any] = {"payment": {"entity": payment}}
        if event == "order.paid":
            order = dict(self.orders[payment["order_id"]], status="paid")
            order["amount_paid"] = order["amount"]
            payload["order"] = {"entity": order}
        if refund_id is not None:
            payload["refund"] = {"entity": self.refunds[refund_id]}
        return self._signed(event, payload)

    # --- the API ---------------------------------------------------------------------------

    def handle(self, seen: Seen) -> Answer:
        expected = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        if seen.headers.get("authorization") != expected:
            return _bad("Authentication failed", 401)
        body: dict[str, Any] = {}
        if seen.method == "POST":
            if seen.headers.get("content-type") != "application/json":
                return _bad("The request body must be JSON")
            body = json.loads(seen.body or b"{}")
        path = seen.path.split("?", 1)[0]
        if seen.method == "POST" and path == "/v1/orders":
            return self._create_order(body)
        if match := re.fullmatch(r"/v1/payments/(pay_\w+)", path):
            payment = self.payments.get(match[1])
            return Answer(200, payment) if payment else _bad("The id provided does not exist")
        if match := re.fullmatch(r"/v1/payments/(pay_\w+)/capture", path):
            return self._capture(match[1], body)
        if match := re.fullmatch(r"/v1/payments/(pay_\w+)/refund", path):
            return self._refund(match[1], body, seen.headers.get("x-refund-idempotency"))
        if seen.method == "POST" and path == "/v1/contacts":
            return self._contact(body)
        if seen.method == "POST" and path == "/v1/fund_accounts":
            return self._fund_account(body)
        if seen.method == "POST" and path == "/v1/payouts":
            return self._payout(body, seen)
        return _bad(f"no such route {seen.method} {path}", 404)

    def _create_order(self, body: dict[str, Any]) -> Answer:
        amount, receipt = body.get("amount"), body.get("receipt")
        if type(amount) is not int or amount < 100:
            return _bad("The amount must be an integer in paise, at least 100.")
        if body.get("currency") != "INR":
            return _bad("The currency must be INR")
        if not isinstance(receipt, str) or not 0 < len(receipt) <= 40:
            return _bad("The receipt must be a string of at most 40 characters")
        if receipt in self.receipts:
            return _bad("receipt already used for another order")
        payment_opts = body.get("payment", {})
        if payment_opts.get("capture") != "manual":
            return _bad("ChargeMitra's orders must ask for manual capture")
        self.receipts.add(receipt)
        order = {
            "id": _id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": "INR",
            "receipt": receipt,
            "status": "created",
            "attempts": 0,
            "notes": body.get("notes", {}),
            "created_at": int(time.time()),
        }
        self.orders[order["id"]] = order
        return Answer(200, order)

    def _capture(self, payment_id: str, body: dict[str, Any]) -> Answer:
        payment = self.payments.get(payment_id)
        if payment is None:
            return _bad("The id provided does not exist")
        amount = body.get("amount")
        if type(amount) is not int:
            return _bad("The amount must be an integer in paise")
        if body.get("currency") != payment["currency"]:
            return _bad("The currency should be the payment's currency")
        if payment["status"] == "captured":
            return _bad("This payment has already been captured")
        if payment["status"] != "authorized":
            return _bad("Only payments which have been authorized can be captured")
        if amount != payment["amount"]:
            # Razorpay: no partial capture.
            return _bad("Capture amount must be equal to the amount authorized")
        payment.update(status="captured", captured=True)
        return Answer(200, payment)

    def _refund(self, payment_id: str, body: dict[str, Any], key: str | None) -> Answer:
        if not key:
            return _bad("X-Refund-Idempotency header is required")
        if key in self.refund_keys:
            return Answer(200, self.refunds[self.refund_keys[key]])
        payment = self.payments.get(payment_id)
        if payment is None:
            return _bad("The id provided does not exist")
        amount = body.get("amount")
        if type(amount) is not int or amount < 100:
            return _bad("The refund amount must be an integer in paise, at least 100")
        if payment["status"] not in {"captured", "refunded"}:
            return _bad("The payment has not been captured")
        if payment["amount_refunded"] + amount > payment["amount"]:
            return _bad("The refund amount exceeds the amount captured")
        payment["amount_refunded"] += amount
        refund = {
            "id": _id("rfnd"),
            "entity": "refund",
            "amount": amount,
            "currency": "INR",
            "payment_id": payment_id,
            "receipt": body.get("receipt"),
            "notes": body.get("notes", {}),
            "status": "pending",
            "speed_requested": body.get("speed", "normal"),
        }
        self.refunds[refund["id"]] = refund
        self.refund_keys[key] = refund["id"]
        return Answer(200, refund)

    # --- RazorpayX ---------------------------------------------------------------------------

    def payout_webhook(self, event: str, payout_id: str) -> tuple[bytes, dict[str, str]]:
        """RazorpayX's word on a payout (``payout.processed``, ``payout.reversed``, …), signed
        like every Razorpay webhook; the payout takes the event's status."""
        payout = self.payouts[payout_id]
        payout["status"] = event.split(".", 1)[1]
        return self._signed(event, {"payout": {"entity": dict(payout)}})

    def _signed(self, event: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(
            {
                "entity": "event",
                "account_id": "acc_Fake0000000001",
                "event": event,
                "contains": list(payload),
                "payload": payload,
                "created_at": int(time.time()),
            }
        ).encode()
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert self.utility.verify_webhook_signature(body.decode(), signature, WEBHOOK_SECRET)
        return body, {
            "content-type": "application/json",
            "x-razorpay-signature": signature,
            "x-razorpay-event-id": _id("evt"),
        }

    def _contact(self, body: dict[str, Any]) -> Answer:
        name, kind, ref = body.get("name"), body.get("type"), body.get("reference_id")
        if not isinstance(name, str) or not 3 <= len(name) <= 50:
            return _bad("The name must be 3 to 50 characters")
        if kind not in {"vendor", "customer", "employee", "self"}:
            return _bad("The type is invalid")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 40):
            return _bad("The reference_id may have at most 40 characters")
        for contact in self.contacts.values():
            if (contact["name"], contact["type"], contact["reference_id"]) == (name, kind, ref):
                return Answer(200, contact)  # RazorpayX answers a duplicate with the original
        contact = {
            "id": _id("cont"),
            "entity": "contact",
            "name": name,
            "type": kind,
            "reference_id": ref,
            "active": True,
        }
        self.contacts[contact["id"]] = contact
        return Answer(201, contact)

    def _fund_account(self, body: dict[str, Any]) -> Answer:
        if body.get("contact_id") not in self.contacts:
            return _bad("The contact_id provided does not exist")
        kind = body.get("account_type")
        if kind == "bank_account":
            bank = body.get("bank_account") or {}
            if not IFSC.match(str(bank.get("ifsc", ""))):
                return _bad("The ifsc is invalid")
            if not re.fullmatch(r"[0-9]{5,35}", str(bank.get("account_number", ""))):
                return _bad("The account number is invalid")
            if not isinstance(bank.get("name"), str) or not 3 <= len(bank["name"]) <= 120:
                return _bad("The name on the bank account must be 3 to 120 characters")
        elif kind == "vpa":
            if not re.fullmatch(
                r"[A-Za-z0-9._-]+@[A-Za-z0-9]+", str((body.get("vpa") or {}).get("address", ""))
            ):
                return _bad("The vpa address is invalid")
        else:
            return _bad("The account_type must be bank_account or vpa")
        account = {"id": _id("fa"), "entity": "fund_account", **body, "active": True}
        self.fund_accounts[account["id"]] = account
        return Answer(201, account)

    def _payout(self, body: dict[str, Any], seen: Seen) -> Answer:
        key = seen.headers.get("x-payout-idempotency")
        if not key:
            return _bad("The X-Payout-Idempotency header is required")
        if key in self.payout_keys:
            first, payout_id = self.payout_keys[key]
            if first != seen.body:
                return _bad("Different request body sent for the same idempotency header")
            return Answer(200, self.payouts[payout_id])
        if body.get("account_number") != PLATFORM_ACCOUNT:
            return _bad("The account number is not a RazorpayX account of this merchant")
        account = self.fund_accounts.get(str(body.get("fund_account_id")))
        if account is None:
            return _bad("The fund_account_id provided does not exist")
        amount = body.get("amount")
        if type(amount) is not int or amount < 100:
            return _bad("The amount must be an integer in paise, at least 100")
        if body.get("currency") != "INR":
            return _bad("The currency must be INR")
        mode = body.get("mode")
        if mode not in PAYOUT_MODES or (mode == "UPI") != (account["account_type"] == "vpa"):
            return _bad("The mode does not fit the fund account")
        if body.get("purpose") not in PAYOUT_PURPOSES:
            return _bad("The purpose is invalid")
        ref = body.get("reference_id")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 40):
            return _bad("The reference_id may have at most 40 characters")
        payout = {
            "id": _id("pout"),
            "entity": "payout",
            "fund_account_id": account["id"],
            "amount": amount,
            "currency": "INR",
            "fees": 0,
            "tax": 0,
            "status": "processing",
            "mode": mode,
            "purpose": body["purpose"],
            "reference_id": ref,
            "narration": body.get("narration"),
            "created_at": int(time.time()),
        }
        self.payouts[payout["id"]] = payout
        self.payout_keys[key] = (seen.body, payout["id"])
        if self.slow_payouts > 0:
            self.slow_payouts -= 1
            return Answer(200, payout, delay_s=self.slow_s)
        return Answer(200, payout)


@contextmanager
def fake_razorpay() -> Iterator[FakeRazorpay]:
    fake = FakeRazorpay()
    with serve(fake.handle) as server:
        fake.server = server
        yield fake
