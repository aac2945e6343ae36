"""What each notification says (pure: no I/O): e-mail subject, plain-text and HTML bodies,
the SMS text and the push message, from an event's kind and facts.

en-IN throughout: amounts are rupees with Indian digit grouping from integer paise
(:func:`cloud.invoices.pdf.inr`: ``₹1,23,456.78``), times are India Standard Time
(``Sat 5 Dec 2026, 2:30 pm IST``). Templates are Jinja2, kept here as strings (one place to
read every message); the HTML body autoescapes, so a charger named ``<b>`` stays text.

An SMS must fit one GSM 03.38 message (:mod:`cloud.accounts.sms`): ``₹`` is not in that
alphabet, so SMS texts say ``Rs.``; characters outside it in names are replaced and the text
is cut to 160 septets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

from cloud.accounts.sms import SMS_MAX_SEPTETS, SmsContractError, gsm_septets
from cloud.invoices.pdf import inr
from cloud.notifications.models import EventKind

IST = ZoneInfo("Asia/Kolkata")


def ist(value: str | datetime) -> str:
    """``Sat 5 Dec 2026, 2:30 pm IST`` for an instant (ISO text or an aware datetime)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = at.astimezone(IST)
    hour = local.hour % 12 or 12
    half = "am" if local.hour < 12 else "pm"
    return f"{local:%a} {local.day} {local:%b %Y}, {hour}:{local:%M} {half} IST"


def rupees_sms(paise: int) -> str:
    """``Rs.1,23,456.78``: :func:`inr` in the GSM alphabet."""
    return "Rs." + inr(paise).replace("₹", "")


def kwh(energy_wh: int) -> str:
    return f"{energy_wh / 1000:.2f} kWh"


def duration(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def gsm_text(text: str) -> str:
    """``text`` with every character outside the GSM alphabet replaced by ``?``."""
    out = []
    for char in text:
        try:
            gsm_septets(char)
        except SmsContractError:
            out.append("?")
        else:
            out.append(char)
    return "".join(out)


def fit_sms(text: str) -> str:
    """``text`` in the GSM alphabet, cut to one SMS (an ellipsis of three dots marks a cut)."""
    text = gsm_text(" ".join(text.split()))
    if gsm_septets(text) <= SMS_MAX_SEPTETS:
        return text
    while gsm_septets(text) > SMS_MAX_SEPTETS - 3:
        text = text[:-1]
    return text.rstrip() + "..."


@dataclass(frozen=True, slots=True)
class Template:
    subject: str
    #: Paragraphs separated by blank lines; the HTML body puts each in a <p>.
    body: str
    sms: str
    #: The link the message points at ("" for none) and its label.
    link: str = ""
    link_label: str = ""


_BOOKING = "{{ f.charger_name }}, {{ f.start|ist }} to {{ f.end|ist }}"

TEMPLATES: dict[EventKind, Template] = {
    EventKind.BOOKING_CONFIRMED: Template(
        subject="Booking confirmed: {{ f.charger_name }}, {{ f.start|ist }}",
        body=(
            "Hello {{ name }},\n\nYour booking is confirmed: " + _BOOKING + ".\n\n"
            "Address: {{ f.address }}\n\nAmount: {{ f.amount_paise|inr }}"
            "{% if f.upper_bound %} at most (you pay for the energy you take){% endif %}."
        ),
        sms="ChargeMitra: booking confirmed, {{ f.charger_name }}, {{ f.start|ist }}. "
        "Amount {{ f.amount_paise|rs }}.",
        link="{{ base }}/bookings/{{ f.booking_id }}",
        link_label="See the booking",
    ),
    EventKind.BOOKING_PENDING: Template(
        subject="Booking request to approve: {{ f.charger_name }}, {{ f.start|ist }}",
        body=(
            "Hello {{ name }},\n\n{{ f.driver_name }} asks to book " + _BOOKING + ".\n\n"
            "Amount: {{ f.amount_paise|inr }}.\n\n"
            "Approve or decline it before {{ f.expires_at|ist }}; after that the request lapses."
        ),
        sms="ChargeMitra: booking request for {{ f.charger_name }}, {{ f.start|ist }}. "
        "Approve or decline before {{ f.expires_at|ist }}.",
        link="{{ base }}/bookings/{{ f.booking_id }}",
        link_label="Approve or decline",
    ),
    EventKind.BOOKING_APPROVED: Template(
        subject="Booking approved: {{ f.charger_name }}, {{ f.start|ist }}",
        body=(
            "Hello {{ name }},\n\nThe host approved your booking: " + _BOOKING + ".\n\n"
            "Address: {{ f.address }}\n\nAmount: {{ f.amount_paise|inr }}"
            "{% if f.upper_bound %} at most (you pay for the energy you take){% endif %}."
        ),
        sms="ChargeMitra: your booking at {{ f.charger_name }}, {{ f.start|ist }} is approved.",
        link="{{ base }}/bookings/{{ f.booking_id }}",
        link_label="See the booking",
    ),
    EventKind.BOOKING_DECLINED: Template(
        subject="Booking declined: {{ f.charger_name }}, {{ f.start|ist }}",
        body=(
            "Hello {{ name }},\n\nThe host declined your booking request: " + _BOOKING + ".\n\n"
            "Anything you paid for it is refunded in full."
        ),
        sms="ChargeMitra: your booking request at {{ f.charger_name }}, {{ f.start|ist }} "
        "was declined. Any prepayment is refunded.",
        link="{{ base }}/chargers/{{ f.charger_id }}",
        link_label="Find another time",
    ),
    EventKind.BOOKING_CANCELLED: Template(
        subject="Booking cancelled: {{ f.charger_name }}, {{ f.start|ist }}",
        body=(
            "Hello {{ name }},\n\n"
            "{% if f.cancelled_by == f.audience %}You cancelled{% elif f.cancelled_by == 'admin' %}"
            "ChargeMitra cancelled{% elif f.cancelled_by == 'host' %}The host cancelled"
            "{% else %}The driver cancelled{% endif %} the booking " + _BOOKING + ".\n\n"
            "{% if f.audience == 'driver' %}{% if f.fee_paise %}A late-cancellation fee of "
            "{{ f.fee_paise|inr }} applies; the rest of any prepayment is refunded."
            "{% else %}Anything you paid for it is refunded in full.{% endif %}"
            "{% else %}The slot is free again.{% endif %}"
        ),
        sms="ChargeMitra: booking at {{ f.charger_name }}, {{ f.start|ist }} was cancelled.",
        link="{{ base }}/bookings/{{ f.booking_id }}",
        link_label="See the booking",
    ),
    EventKind.SESSION_STARTED: Template(
        subject="Charging started: {{ f.charger_name }}",
        body=(
            "Hello {{ name }},\n\nCharging started at {{ f.charger_name }} "
            "(connector {{ f.connector }}) on {{ f.started_at|ist }}."
        ),
        sms="ChargeMitra: charging started at {{ f.charger_name }}, {{ f.started_at|ist }}.",
        link="{{ base }}/sessions/{{ f.session_id }}",
        link_label="Watch it live",
    ),
    EventKind.SESSION_STOPPED: Template(
        subject="Charging stopped: {{ f.energy_wh|kwh }} at {{ f.charger_name }}",
        body=(
            "Hello {{ name }},\n\nYour session at {{ f.charger_name }} stopped on "
            "{{ f.stopped_at|ist }}: {{ f.energy_wh|kwh }} in {{ f.duration_s|duration }}.\n\n"
            "Your receipt, with the bill line by line, is at the link below."
        ),
        sms="ChargeMitra: charging stopped at {{ f.charger_name }}: {{ f.energy_wh|kwh }}. "
        "Receipt: {{ base }}/sessions/{{ f.session_id }}/receipt",
        link="{{ base }}/sessions/{{ f.session_id }}/receipt",
        link_label="See the receipt",
    ),
    EventKind.CHARGER_OFFLINE: Template(
        subject="Charger offline: {{ f.charger_name }}",
        body=(
            "Hello {{ name }},\n\n{{ f.charger_name }} lost its connection on "
            "{{ f.offline_at|ist }} and is still offline. Drivers cannot start sessions on it "
            "until it is back.\n\nCheck the charger's power and network; the agent's "
            "'chargemitra-agent doctor' says what it sees."
        ),
        sms="ChargeMitra: {{ f.charger_name }} is offline since {{ f.offline_at|ist }}. "
        "Check its power and network.",
        link="{{ base }}/host/chargers/{{ f.charger_id }}",
        link_label="See the charger",
    ),
    EventKind.PAYOUT_PAID: Template(
        subject="Payout sent: {{ f.amount_paise|inr }}",
        body=(
            "Hello {{ name }},\n\nWe sent you {{ f.amount_paise|inr }} for your earnings from "
            "{{ f.period_start|ist }} to {{ f.period_end|ist }}."
            "{% if f.provider_ref %}\n\nReference: {{ f.provider_ref }}{% endif %}"
        ),
        sms="ChargeMitra: payout of {{ f.amount_paise|rs }} sent.",
        link="{{ base }}/host/payouts",
        link_label="See your payouts",
    ),
    EventKind.DISPUTE_UPDATED: Template(
        subject="Dispute {{ f.status_label }}: session at {{ f.charger_name }}",
        body=(
            "Hello {{ name }},\n\nThe dispute about the session at {{ f.charger_name }}: "
            "{{ f.status_label }}.{% if f.note %}\n\n{{ f.note }}{% endif %}"
            "{% if f.refund_paise %}\n\nRefund: {{ f.refund_paise|inr }}.{% endif %}"
        ),
        sms="ChargeMitra: dispute about the session at {{ f.charger_name }}: {{ f.status_label }}.",
        link="{{ base }}/disputes/{{ f.dispute_id }}",
        link_label="See the dispute",
    ),
}

_HTML = """<!doctype html>
<html lang="en-IN"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: sans-serif; color: #1b1b1b; max-width: 36em">
{% for paragraph in paragraphs %}<p>{{ paragraph }}</p>
{% endfor %}{% if link %}<p><a href="{{ link }}" style="font-weight: bold">{{ link_label }}</a></p>
{% endif %}<p style="color: #666; font-size: small">ChargeMitra. You get this message because \
of your notification settings; change them in your profile.</p>
</body></html>
"""


def _environment() -> Environment:
    sources: dict[str, str] = {"email.html": _HTML}
    for kind, t in TEMPLATES.items():
        for part in ("subject", "body", "sms", "link", "link_label"):
            sources[f"{kind.value}.{part}"] = getattr(t, part)
    env = Environment(
        loader=DictLoader(sources),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )
    env.filters.update(inr=inr, rs=rupees_sms, ist=ist, kwh=kwh, duration=duration)
    return env


_ENV = _environment()


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str
    #: The Web Push message: JSON ``{"kind", "title", "body", "url"}``.
    push: str


def render(kind: EventKind, facts: Mapping[str, Any], *, name: str, base_url: str) -> Rendered:
    """Every channel's text of one event for one recipient (``name``)."""
    context = {"f": dict(facts), "name": name or "there", "base": base_url.rstrip("/")}

    def part(which: str) -> str:
        return _ENV.get_template(f"{kind.value}.{which}").render(context).strip()

    subject = " ".join(part("subject").split())[:200]
    body, link, label = part("body"), part("link"), part("link_label")
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    text = "\n\n".join(paragraphs) + (f"\n\n{label}: {link}" if link else "") + "\n"
    html = _ENV.get_template("email.html").render(
        subject=subject, paragraphs=paragraphs, link=link, link_label=label
    )
    push = json.dumps(
        {
            "kind": kind.value,
            "title": subject,
            "body": paragraphs[1] if len(paragraphs) > 1 else paragraphs[0],
            "url": link,
        },
        ensure_ascii=False,
    )
    return Rendered(subject=subject, text=text, html=html, sms=fit_sms(part("sms")), push=push)
