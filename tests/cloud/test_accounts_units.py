"""The pure parts of accounts: Indian phone normalisation and the SMS gateway contract."""

from __future__ import annotations

import pytest

from cloud.accounts.otp import new_otp, otp_message
from cloud.accounts.phones import PhoneNumberInvalid, normalize_phone
from cloud.accounts.sms import MemorySmsOutbox, SmsContractError, gsm_septets


@pytest.mark.parametrize(
    ("typed", "e164"),
    [
        ("9812345678", "+919812345678"),
        ("98123 45678", "+919812345678"),
        ("+91-98123-45678", "+919812345678"),
        ("+91 98123 45678", "+919812345678"),
        ("09812345678", "+919812345678"),
        ("919812345678", "+919812345678"),
        ("0091 98123 45678", "+919812345678"),
        ("(+91) 98123.45678", "+919812345678"),
        ("6000000000", "+916000000000"),
        ("7012345678", "+917012345678"),
        ("8812345678", "+918812345678"),
    ],
)
def test_indian_mobile_numbers_normalise_to_e164(typed: str, e164: str) -> None:
    assert normalize_phone(typed) == e164


@pytest.mark.parametrize(
    "typed",
    [
        "5812345678",  # mobile numbers start 6-9
        "0112345678",  # a Delhi landline
        "981234567",  # nine digits
        "98123456789",  # eleven digits, no trunk zero
        "+4915112345678",  # not India
        "+91 98123 4567x",
        "\uff19\uff18\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # full-width digits
        "",
        "+91",
    ],
)
def test_other_numbers_are_refused(typed: str) -> None:
    with pytest.raises(PhoneNumberInvalid):
        normalize_phone(typed)


async def test_the_fake_gateway_checks_the_contract() -> None:
    outbox = MemorySmsOutbox()
    await outbox.send("+919812345678", "x" * 160)
    assert [m.to for m in outbox.sent] == ["+919812345678"]
    for to, text in [
        ("9812345678", "no plus"),
        ("+0912345678", "leading zero"),
        ("+919812345678", "x" * 161),
        ("+919812345678", "{" * 81),  # extension characters take two septets
        ("+919812345678", "नमस्ते"),  # Devanagari would need UCS-2
        ("+919812345678", ""),
    ]:
        with pytest.raises(SmsContractError):
            await outbox.send(to, text)
    assert len(outbox.sent) == 1


def test_gsm_septets_count_the_extension_table_twice() -> None:
    assert gsm_septets("Rs. 120 @ 7.4 kW") == 16
    assert gsm_septets("[€]") == 6


@pytest.mark.parametrize("ttl_s", [30, 300, 3600])
def test_the_code_message_fits_one_sms(ttl_s: int) -> None:
    code = new_otp()
    assert len(code) == 6
    assert code.isdigit()
    message = otp_message(code, ttl_s)
    assert message.startswith(code)
    assert gsm_septets(message) <= 160
