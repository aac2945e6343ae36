"""Request and response bodies of the account routes.

Phones are normalised to E.164 while validating (:func:`cloud.accounts.phones.normalize_phone`),
emails are lower-cased: the service only ever sees canonical identities.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, StrictBool, model_validator

from cloud.accounts.models import KycStatus, Role
from cloud.accounts.passwords import MIN_PASSWORD_LENGTH
from cloud.accounts.phones import normalize_phone
from cloud.schemas import NOT_BLANK_PATTERN, WHITESPACE, RequestModel

#: Long enough for any passphrase, short enough that hashing it is not a denial of service.
MAX_PASSWORD_LENGTH = 128

# Deliberately loose: one @, a dot in the domain, no spaces. Deliverability is for a
# confirmation mail to prove, not a regular expression.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


def _email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.fullmatch(value):
        raise ValueError("not an email address")
    return value


def _phone(value: str) -> str:
    # PhoneNumberInvalid is a ValueError: pydantic reports it as a 422 on the field.
    return normalize_phone(value)


def _name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("a name cannot be blank")
    return value


#: What :data:`_EMAIL` accepts once surrounding whitespace is dropped (no NUL either).
_WS = WHITESPACE
EMAIL_PATTERN = rf"^[{_WS}]*[^@{_WS}\x00]{{1,64}}@[^@{_WS}.\x00]+(\.[^@{_WS}.\x00]+)+[{_WS}]*$"
# What normalize_phone accepts: separators anywhere, then +91, 0091, 91 or 0 before ten
# digits of which the first is 6-9 (cloud.accounts.phones).
_SEP = rf"[{WHITESPACE}\-.()]*"
PHONE_PATTERN = (
    rf"^{_SEP}(\+{_SEP}9{_SEP}1{_SEP}|0{_SEP}0{_SEP}9{_SEP}1{_SEP}|9{_SEP}1{_SEP}|0{_SEP})?"
    rf"[6-9]{_SEP}([0-9]{_SEP}){{9}}$"
)
Email = Annotated[
    str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN), AfterValidator(_email)
]
Phone = Annotated[
    str,
    Field(
        min_length=10,
        max_length=24,
        pattern=PHONE_PATTERN,
        examples=["+919812345678", "98123 45678"],
    ),
    AfterValidator(_phone),
]
Password = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
Name = Annotated[
    str, Field(min_length=1, max_length=120, pattern=NOT_BLANK_PATTERN), AfterValidator(_name)
]
#: A BCP 47 tag as the apps use them: en-IN, hi-IN, ta-IN …
Locale = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", max_length=10)]
OtpCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class RegisterRequest(RequestModel):
    email: Email
    password: Password
    name: Name
    phone: Phone | None = None
    #: Also become a host (charger owner): a host profile is created with KYC not started.
    host: StrictBool = False


class LoginRequest(RequestModel):
    """Exactly one of ``email`` or ``phone``, and the password."""

    # The object has three properties and no others, and password is required: two
    # properties exactly means one identity. (A oneOf of two `required` arms says the same,
    # but client generators turn it into an untyped body.)
    schema_rules: ClassVar[dict[str, Any]] = {"minProperties": 2, "maxProperties": 2}

    email: Email | None = None
    phone: Phone | None = None
    # No minimum here: a short password is simply wrong, and the answer must not differ.
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)

    @model_validator(mode="after")
    def _one_identity(self) -> Self:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give exactly one of email or phone")
        return self


class RefreshRequest(RequestModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutRequest(RequestModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class OtpRequest(RequestModel):
    phone: Phone


class OtpVerifyRequest(RequestModel):
    phone: Phone
    code: OtpCode
    #: The name of a new account, when this number has none yet (phone-first sign-up).
    name: Name | None = None


class MeUpdate(RequestModel):
    """Fields to change; omitted fields stay. A new phone must be verified again (OTP);
    a new password needs the current one and revokes every refresh token, this device's
    too (access tokens already issued lapse within ``AUTH_ACCESS_TTL_S``)."""

    schema_rules: ClassVar[dict[str, Any]] = {
        "dependentRequired": {"password": ["current_password"]}
    }

    name: Name | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    password: Password | None = None
    current_password: str | None = Field(default=None, min_length=1, max_length=MAX_PASSWORD_LENGTH)

    @model_validator(mode="after")
    def _password_needs_current(self) -> Self:
        if self.password is not None and self.current_password is None:
            raise ValueError("changing the password needs current_password")
        return self


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 -- the OAuth token type, not a secret
    #: Seconds until the access token expires.
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class HostProfile(BaseModel):
    id: str
    display_name: str
    kyc_status: KycStatus


class Me(BaseModel):
    id: str
    email: str | None
    phone: str | None
    phone_verified: bool
    name: str
    locale: str
    roles: list[Role]
    host: HostProfile | None
    created_at: datetime


class Registered(BaseModel):
    user: Me
    tokens: TokenPair


class OtpSent(BaseModel):
    """Always the same answer, whether or not the number has an account."""

    phone: str
    expires_in: int
