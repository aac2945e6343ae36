"""The pure parts of accounts: Indian phone normalisation, the SMS gateway contract, and
admitting an access token against the account's current state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.accounts.models import Role
from cloud.accounts.otp import new_otp, otp_message
from cloud.accounts.phones import PhoneNumberInvalid, normalize_phone
from cloud.accounts.principals import PrincipalState, admit
from cloud.accounts.sms import MemorySmsOutbox, SmsContractError, gsm_septets
from cloud.accounts.tokens import Principal, issue_access_token, verify_access_token
from cloud.errors import Unauthorized


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


# --- admitting a token against the account's state (cloud.accounts.principals) -------------

_CLAIMS = Principal(
    user_id="U1", roles=frozenset({Role.ADMIN, Role.DRIVER}), token_id="J1", token_version=3
)


def test_a_token_is_admitted_with_the_roles_the_account_has_now() -> None:
    state = PrincipalState(token_version=3, disabled=False, roles=frozenset({Role.DRIVER}))
    admitted = admit(_CLAIMS, state)
    assert admitted.roles == {Role.DRIVER}  # the admin role the token names is gone
    assert (admitted.user_id, admitted.token_id, admitted.token_version) == ("U1", "J1", 3)


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (None, "no longer exists"),
        (PrincipalState(token_version=3, disabled=True, roles=frozenset()), "disabled"),
        (PrincipalState(token_version=4, disabled=False, roles=frozenset()), "revoked"),
    ],
)
def test_a_token_of_a_deleted_disabled_or_moved_on_account_is_refused(
    state: PrincipalState | None, why: str
) -> None:
    with pytest.raises(Unauthorized, match=why):
        admit(_CLAIMS, state)


def test_the_access_token_carries_the_account_version() -> None:
    now = datetime.now(UTC)
    token = issue_access_token(
        "k" * 32, user_id="U1", roles={Role.DRIVER}, now=now, ttl_s=60, token_version=7
    )
    assert verify_access_token("k" * 32, token).token_version == 7
    old = issue_access_token("k" * 32, user_id="U1", roles={Role.DRIVER}, now=now, ttl_s=60)
    assert verify_access_token("k" * 32, old).token_version == 0
