"""A fake Stripe API on loopback that holds our client to Stripe's documented contract.

It checks the ``Authorization: Bearer <secret key>`` header, form-encoded bodies, amounts as
integers in the currency's smallest unit, a lowercase ISO currency, ``capture_method=manual``
on our PaymentIntents, and an ``Idempotency-Key`` on every POST — replaying the first answer
for a repeated key, refusing a key reused with other parameters, as Stripe does. Captures may
be partial (``amount_to_capture`` ≤ ``amount_capturable``). Connect transfers
(``/v1/transfers``) go to a connected account the fake knows (:attr:`FakeStripe.accounts`).
Webhooks are signed with the ``Stripe-Signature`` scheme
(``t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>")``) and checked with
``stripe.Webhook.construct_event`` before they are handed out.
"""

from __future__ import annotations

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
from urllib.parse import parse_qsl

import stripe

from tests.support.fake_http import Answer, FakeServer, Seen, serve

SECRET_KEY = "sk_test_Fake0" + "s" * 24
WEBHOOK_SECRET = "whsec_Fake0" + "w" * 24


def _bad(message: str, status: int = 400, kind: str = "invalid_request_error") -> Answer:
    return Answer(status, {"error": {"type": kind, "message": message}})


def _amount(value: str | None) -> int | None:
    return int(value) if value is not None and re.fullmatch(r"[1-9][0-9]*", value) else None


@dataclass
class FakeStripe:
    server: FakeServer | None = None
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    replies: dict[str, tuple[str, Answer]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Connected accounts (``acct_…``) transfers may go to.
    accounts: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def seen(self) -> list[Seen]:
        assert self.server is not None
        return self.server.seen

    def authorize(self, intent_id: str) -> None:
        """The driver confirms the card in Stripe.js: the intent awaits capture."""
        intent = self.intents[intent_id]
        intent.update(status="requires_capture", amount_capturable=intent["amount"])

    def reverse(self, transfer_id: str, amount: int) -> dict[str, Any]:
        """The platform pulls ``amount`` of a transfer back (``POST /v1/transfers/{id}/
        reversals`` in the dashboard or by support): the transfer as Stripe then shows it,
        ``amount_reversed`` the total so far, for a ``transfer.reversed`` event."""
        transfer = self.transfers[transfer_id]
        left = int(transfer["amount"]) - int(transfer.get("amount_reversed", 0))
        assert 0 < amount <= left, "Stripe refuses to reverse more than is left"
        reversal = {
            "id": f"trr_{secrets.token_hex(8)}",
            "object": "transfer_reversal",
            "amount": amount,
            "transfer": transfer_id,
        }
        transfer["amount_reversed"] = int(transfer.get("amount_reversed", 0)) + amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer.setdefault("reversals", {"object": "list", "data": []})["data"].append(reversal)
        snapshot: dict[str, Any] = json.loads(json.dumps(transfer))  # later reversals: not here
        return snapshot

    def webhook(self, event_type: str, obj: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(
            {
                "id": f"evt_{secrets.token_hex(8)}",
                "object": "event",
                "api_version": "2025-01-27.acacia",
                "created": int(time.time()),
                "type": event_type,
                "data": {"object": obj},
                "livemode": False,
            }
        ).encode()
        stamp = int(time.time())
        mac = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        header = f"t={stamp},v1={mac.hexdigest()}"
        stripe.Webhook.construct_event(body.decode(), header, WEBHOOK_SECRET)
        return body, {"content-type": "application/json", "stripe-signature": header}

    def handle(self, seen: Seen) -> Answer:
        if seen.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return _bad("Invalid API Key provided", 401, "invalid_request_error")
        path = seen.path.split("?", 1)[0]
        if seen.method == "GET" and (m := re.fullmatch(r"/v1/payment_intents/(pi_\w+)", path)):
            intent = self.intents.get(m[1])
            return Answer(200, intent) if intent else _bad("No such payment_intent", 404)
        if seen.method != "POST":
            return _bad(f"no such route {seen.method} {path}", 404)
        if seen.headers.get("content-type", "").split(";")[0] != (
            "application/x-www-form-urlencoded"
        ):
            return _bad("bodies are form-encoded")
        key = seen.headers.get("idempotency-key")
        if not key:
            return _bad("ChargeMitra sends an Idempotency-Key on every POST")
        form = dict(parse_qsl(seen.body.decode()))
        fingerprint = f"{path}?{sorted(form.items())}"
        if key in self.replies:
            first, answer = self.replies[key]
            if first != fingerprint:
                return _bad(
                    "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with.",
                    kind="idempotency_error",
                )
            return answer
        answer = self._route(path, form)
        if answer.status < 500:
            self.replies[key] = (fingerprint, answer)
        return answer

    def _route(self, path: str, form: dict[str, str]) -> Answer:
        if path == "/v1/payment_intents":
            return self._create_intent(form)
        if m := re.fullmatch(r"/v1/payment_intents/(pi_\w+)/capture", path):
            return self._capture(m[1], form)
        if path == "/v1/refunds":
            return self._refund(form)
        if path == "/v1/transfers":
            return self._transfer(form)
        return _bad(f"no such route POST {path}", 404)

    def _create_intent(self, form: dict[str, str]) -> Answer:
        amount = _amount(form.get("amount"))
        currency = form.get("currency", "")
        if amount is None:
            return _bad("amount must be a positive integer in the smallest currency unit")
        if not re.fullmatch(r"[a-z]{3}", currency):
            return _bad("currency must be a lowercase ISO code")
        if form.get("capture_method") != "manual":
            return _bad("ChargeMitra authorizes first: capture_method must be manual")
        intent_id = f"pi_{secrets.token_hex(8)}"
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "capture_method": "manual",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(6)}",
            "status": "requires_payment_method",
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
        }
        self.intents[intent_id] = intent
        return Answer(200, intent)

    def _capture(self, intent_id: str, form: dict[str, str]) -> Answer:
        intent = self.intents.get(intent_id)
        if intent is None:
            return _bad("No such payment_intent", 404)
        if intent["status"] != "requires_capture":
            return _bad(f"This PaymentIntent could not be captured: it is {intent['status']}")
        amount = _amount(form.get("amount_to_capture")) or intent["amount_capturable"]
        if amount > intent["amount_capturable"]:
            return _bad("amount_to_capture exceeds amount_capturable")
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        return Answer(200, intent)

    def _refund(self, form: dict[str, str]) -> Answer:
        intent = self.intents.get(form.get("payment_intent", ""))
        amount = _amount(form.get("amount"))
        if intent is None or amount is None:
            return _bad("a refund needs a payment_intent and an integer amount")
        refunded = sum(
            r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent["id"]
        )
        if refunded + amount > intent["amount_received"]:
            return _bad("Refund amount is greater than the unrefunded amount")
        refund = {
            "id": f"re_{secrets.token_hex(8)}",
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
        }
        self.refunds[refund["id"]] = refund
        return Answer(200, refund)

    def _transfer(self, form: dict[str, str]) -> Answer:
        amount = _amount(form.get("amount"))
        currency = form.get("currency", "")
        if amount is None:
            return _bad("amount must be a positive integer in the smallest currency unit")
        if not re.fullmatch(r"[a-z]{3}", currency):
            return _bad("currency must be a lowercase ISO code")
        destination = form.get("destination", "")
        if destination not in self.accounts:
            return _bad(f"No such destination: '{destination}'")
        transfer = {
            "id": f"tr_{secrets.token_hex(8)}",
            "object": "transfer",
            "amount": amount,
            "currency": currency,
            "destination": destination,
            "transfer_group": form.get("transfer_group"),
            "reversed": False,
            "amount_reversed": 0,
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
        }
        self.transfers[str(transfer["id"])] = transfer
        return Answer(200, transfer)


@contextmanager
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    with serve(fake.handle) as server:
        fake.server = server
        yield fake
