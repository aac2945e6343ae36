"""The pure parts of notifications: what each message says (en-IN amounts, IST times, one
GSM SMS), the push endpoint rule, the defaults, and the subscription body's checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud.accounts.sms import SMS_MAX_SEPTETS, gsm_septets
from cloud.notifications.channels import push_host_allowed
from cloud.notifications.models import EventKind
from cloud.notifications.preferences import DEFAULTS
from cloud.notifications.render import TEMPLATES, fit_sms, ist, render
from cloud.notifications.schemas import PushSubscriptionIn

SAMPLE: dict[EventKind, dict[str, Any]] = {
    EventKind.BOOKING_CONFIRMED: {},
    EventKind.BOOKING_PENDING: {"driver_name": "Ravi", "expires_at": "2026-12-05T04:00:00+00:00"},
    EventKind.BOOKING_APPROVED: {},
    EventKind.BOOKING_DECLINED: {},
    EventKind.BOOKING_CANCELLED: {"cancelled_by": "driver", "fee_paise": 5000, "audience": "host"},
    EventKind.SESSION_STARTED: {
        "session_id": "S1",
        "connector": 1,
        "started_at": "2026-12-05T04:30:00+00:00",
    },
    EventKind.SESSION_STOPPED: {
        "session_id": "S1",
        "stopped_at": "2026-12-05T05:45:00+00:00",
        "energy_wh": 12345,
        "duration_s": 4500.0,
    },
    EventKind.CHARGER_OFFLINE: {"offline_at": "2026-12-05T04:30:00+00:00"},
    EventKind.PAYOUT_PAID: {
        "payout_id": "P1",
        "period_start": "2026-11-01T00:00:00+00:00",
        "period_end": "2026-11-08T00:00:00+00:00",
        "provider_ref": "pout_1",
    },
    EventKind.DISPUTE_UPDATED: {
        "dispute_id": "D1",
        "status_label": "resolved with a refund",
        "note": "",
        "refund_paise": 25000,
    },
}
BOOKING = {
    "booking_id": "B1",
    "charger_id": "C1",
    "charger_name": "Kothrud <Gate> 2",
    "address": "MG Road, Pune",
    "start": "2026-12-05T04:30:00+00:00",
    "end": "2026-12-05T05:30:00+00:00",
    "amount_paise": 1234567890,
    "upper_bound": True,
}


def test_every_kind_has_a_template_a_default_and_renders() -> None:
    assert set(TEMPLATES) == set(EventKind) == set(DEFAULTS) == set(SAMPLE)
    for kind in EventKind:
        out = render(kind, BOOKING | SAMPLE[kind], name="Asha", base_url="https://cm.example/")
        assert out.subject
        assert "\n" not in out.subject
        assert out.text.startswith("Hello Asha,")
        assert "<Gate>" not in out.html  # escaped in HTML …
        assert "<Gate>" in out.text or kind is EventKind.PAYOUT_PAID  # … text as it is
        assert gsm_septets(out.sms) <= SMS_MAX_SEPTETS
        assert json.loads(out.push)["kind"] == kind.value


def test_amounts_are_rupees_with_indian_grouping_and_times_are_ist() -> None:
    out = render(EventKind.BOOKING_CONFIRMED, BOOKING, name="Asha", base_url="https://x")
    # 1,23,45,678.90 rupees: lakh and crore grouping, exact paise.
    assert "₹1,23,45,678.90" in out.text
    assert "₹1,23,45,678.90" in out.html
    assert "Rs.1,23,45,678.90" in out.sms  # ₹ is not in the GSM alphabet
    assert "Sat 5 Dec 2026, 10:00 am IST to Sat 5 Dec 2026, 11:00 am IST" in out.text
    assert out.subject == "Booking confirmed: Kothrud <Gate> 2, Sat 5 Dec 2026, 10:00 am IST"


def test_ist_is_utc_plus_five_thirty_across_midnight() -> None:
    assert ist(datetime(2026, 12, 31, 18, 30, tzinfo=UTC)) == "Fri 1 Jan 2027, 12:00 am IST"
    assert ist("2026-06-15T06:45:00+00:00") == "Mon 15 Jun 2026, 12:15 pm IST"


@given(st.text(max_size=400))
def test_an_sms_always_fits_one_gsm_message(text: str) -> None:
    fitted = fit_sms(text)
    assert gsm_septets(fitted) <= SMS_MAX_SEPTETS


def test_a_name_in_hindi_still_makes_a_valid_sms() -> None:
    facts = BOOKING | {"charger_name": "कोथरूड चार्जर"}
    out = render(EventKind.BOOKING_CONFIRMED, facts, name="आशा", base_url="https://x")
    assert out.sms.startswith("ChargeMitra: booking confirmed, ")
    assert gsm_septets(out.sms) <= SMS_MAX_SEPTETS


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", True),
        ("https://updates.push.services.mozilla.com/wpush/v2/x", True),
        ("https://db5p.notify.windows.com/w/?token=x", True),
        ("https://web.push.apple.com/QGx", True),
        ("http://fcm.googleapis.com/fcm/send/abc", False),  # https only outside tests
        ("https://fcm.googleapis.com.evil.example/x", False),
        ("https://evilnotify.windows.com/x", False),
        ("https://user:pw@fcm.googleapis.com/x", False),
        ("https://169.254.169.254/latest/meta-data", False),
        ("file:///etc/passwd", False),
    ],
)
def test_push_endpoints_must_be_a_known_push_service(endpoint: str, allowed: bool) -> None:
    hosts = (
        "fcm.googleapis.com,updates.push.services.mozilla.com,.notify.windows.com,.push.apple.com"
    )
    assert push_host_allowed(endpoint, hosts, allow_http=False) is allowed


def test_a_subscription_needs_a_real_p256_point_and_a_16_byte_secret() -> None:
    point = "B" + "A" * 86  # 0x04 then zeros: the right shape
    good = {"endpoint": "https://fcm.googleapis.com/x", "keys": {"p256dh": point, "auth": "A" * 22}}
    assert PushSubscriptionIn.model_validate(good).keys.auth == "A" * 22
    for keys in ({"p256dh": "A" * 87, "auth": "A" * 22}, {"p256dh": point, "auth": "A" * 24}):
        with pytest.raises(ValidationError):
            PushSubscriptionIn.model_validate(good | {"keys": keys})
