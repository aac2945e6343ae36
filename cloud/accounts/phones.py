"""Indian mobile numbers: what people type, normalised to E.164 (``+91XXXXXXXXXX``).

Pure: no I/O. People write the same number as ``98123 45678``, ``+91-98123-45678``,
``09812345678`` (the trunk prefix) or ``0091 98123 45678`` (the international prefix dialled
from India); all become ``+919812345678``. Only mobile numbers are accepted: ten digits
starting 6 to 9 (the National Numbering Plan's mobile series), since the number receives SMS.
"""

from __future__ import annotations

import re

#: Separators people put between digit groups; anything else is refused.
_SEPARATORS = re.compile(r"[\s\-.()]")
_MOBILE = re.compile(r"[6-9]\d{9}")
#: E.164 in general (the SMS contract): a plus, then up to 15 digits, no leading zero.
E164 = re.compile(r"\+[1-9]\d{6,14}")


class PhoneNumberInvalid(ValueError):
    """Not an Indian mobile number; the message says why, for the client."""


def normalize_phone(raw: str) -> str:
    """``raw`` as ``+91`` and ten digits, or :class:`PhoneNumberInvalid`."""
    compact = _SEPARATORS.sub("", raw)
    if compact.startswith("+"):
        if not compact.startswith("+91"):
            raise PhoneNumberInvalid("only Indian (+91) mobile numbers are accepted")
        national = compact[3:]
    elif compact.startswith("0091"):
        national = compact[4:]
    elif len(compact) == 12 and compact.startswith("91"):
        national = compact[2:]
    elif len(compact) == 11 and compact.startswith("0"):
        national = compact[1:]
    else:
        national = compact
    if not national.isascii() or not national.isdigit() or len(national) != 10:
        raise PhoneNumberInvalid("a mobile number has ten digits, e.g. 98123 45678")
    if not _MOBILE.fullmatch(national):
        raise PhoneNumberInvalid("an Indian mobile number starts with 6, 7, 8 or 9")
    return "+91" + national
