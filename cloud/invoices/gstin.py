"""GSTINs and GST state codes (pure).

A GSTIN is 15 characters: the state code (2 digits), the holder's PAN (5 letters, 4 digits,
1 letter), the entity number within that PAN and state (1-9, A-Z), ``Z``, and a check
character: a Luhn mod 36 over the first 14 (the GSTN's published scheme), so a mistyped
GSTIN is caught before it is printed on an invoice.
"""

from __future__ import annotations

import re

from cloud.errors import InvalidRequest

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: cloud.accounts.models.GSTIN_PATTERN (the database checks the shape, this the checksum).
_SHAPE = re.compile(r"^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$")

#: GST state and union territory codes (the first two digits of a GSTIN, and the code an
#: invoice prints beside the place of supply), with the names and abbreviations a listing's
#: ``state`` field may hold.
STATES: dict[str, tuple[str, ...]] = {
    "01": ("Jammu and Kashmir", "JK"),
    "02": ("Himachal Pradesh", "HP"),
    "03": ("Punjab", "PB"),
    "04": ("Chandigarh", "CH"),
    "05": ("Uttarakhand", "UK", "UT", "Uttaranchal"),
    "06": ("Haryana", "HR"),
    "07": ("Delhi", "DL", "New Delhi", "NCT of Delhi"),
    "08": ("Rajasthan", "RJ"),
    "09": ("Uttar Pradesh", "UP"),
    "10": ("Bihar", "BR"),
    "11": ("Sikkim", "SK"),
    "12": ("Arunachal Pradesh", "AR"),
    "13": ("Nagaland", "NL"),
    "14": ("Manipur", "MN"),
    "15": ("Mizoram", "MZ"),
    "16": ("Tripura", "TR"),
    "17": ("Meghalaya", "ML"),
    "18": ("Assam", "AS"),
    "19": ("West Bengal", "WB"),
    "20": ("Jharkhand", "JH"),
    "21": ("Odisha", "OD", "OR", "Orissa"),
    "22": ("Chhattisgarh", "CG", "CT"),
    "23": ("Madhya Pradesh", "MP"),
    "24": ("Gujarat", "GJ"),
    "26": ("Dadra and Nagar Haveli and Daman and Diu", "DH", "DN", "DD"),
    "27": ("Maharashtra", "MH"),
    "29": ("Karnataka", "KA"),
    "30": ("Goa", "GA"),
    "31": ("Lakshadweep", "LD"),
    "32": ("Kerala", "KL"),
    "33": ("Tamil Nadu", "TN"),
    "34": ("Puducherry", "PY", "Pondicherry"),
    "35": ("Andaman and Nicobar Islands", "AN"),
    "36": ("Telangana", "TS", "TG"),
    "37": ("Andhra Pradesh", "AP"),
    "38": ("Ladakh", "LA"),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("&", "and"))


_BY_NAME = {_key(alias): code for code, aliases in STATES.items() for alias in (code, *aliases)}


class InvalidGstin(InvalidRequest):
    def __init__(self, gstin: str, reason: str) -> None:
        super().__init__(f"GSTIN {gstin!r} {reason}", field="gstin")
        self.gstin = gstin


class UnknownState(InvalidRequest):
    def __init__(self, state: str) -> None:
        super().__init__(
            f"{state!r} is not an Indian state or union territory GST knows", field="state"
        )
        self.state = state


def check_character(first14: str) -> str:
    """The 15th character of a GSTIN whose first 14 are ``first14`` (Luhn mod 36)."""
    total = 0
    for i, char in enumerate(first14):
        product = _ALPHABET.index(char) * (2 if i % 2 else 1)
        total += product // 36 + product % 36
    return _ALPHABET[(36 - total % 36) % 36]


def validate_gstin(gstin: str) -> str:
    """``gstin`` upper-cased, if it is a well-formed GSTIN of a known state with the right
    check character; raises :class:`InvalidGstin` otherwise."""
    value = gstin.strip().upper()
    if not _SHAPE.fullmatch(value):
        raise InvalidGstin(gstin, "is not 15 characters of state code, PAN, entity, Z, check")
    if value[:2] not in STATES:
        raise InvalidGstin(gstin, f"names no state (code {value[:2]})")
    if check_character(value[:14]) != value[14]:
        raise InvalidGstin(gstin, "fails its check character (mistyped?)")
    return value


def state_code(state: str) -> str:
    """The GST code of a state given by name, abbreviation or code (``Maharashtra``, ``MH``,
    ``27``); raises :class:`UnknownState`."""
    code = _BY_NAME.get(_key(state))
    if code is None:
        raise UnknownState(state)
    return code


def state_name(code: str) -> str:
    return STATES[code][0]
