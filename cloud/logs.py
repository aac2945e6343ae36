"""JSON log lines on stderr: one object per record, extra fields kept as keys, credentials
redacted.

**No credential reaches a log line.** Every line is built by :class:`JsonFormatter`, which
passes the message, every string extra and the exception text through :func:`redact`:
credential-bearing query parameters (``?access_token=…``, ``refresh_token``, ``password`` …),
``Bearer``/``bearer.`` tokens (headers, WebSocket subprotocols), anything shaped like a JWT
or a PASETO token, and passwords inside URLs (``postgresql://user:…@``) become
``[REDACTED]``; extras whose *name* says secret (``password``, ``authorization``,
``*_token`` …) are replaced whole. This covers uvicorn's access log, whose lines carry the
full request target — a WebSocket opened with ``?access_token=…`` used to put the whole JWT
in the log at INFO. :func:`configure_logging` is the one logging setup of every cloud
process (``chargemitra-cloud …`` runs uvicorn with ``log_config=None``, so uvicorn's loggers
end here too).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

REDACTED = "[REDACTED]"

#: Query parameters (and form-style ``name=value`` pairs) that carry a credential.
_SECRET_PARAMS = "|".join(
    (
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "key",
        "signature",
        "sig",
        "auth",
        "authorization",
        "code_verifier",
    )
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ?access_token=…, &password=… (up to the next separator or quote).
    (re.compile(rf"(?i)([?&;](?:{_SECRET_PARAMS})=)[^&;#\s\"'\\]*"), rf"\1{REDACTED}"),
    # Authorization: Bearer …, and the WebSocket subprotocol bearer.<token> (16+ characters,
    # so prose such as "bearer token required" stays as written).
    (re.compile(r"(?i)\b(bearer)(\s+|\.)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\1\2{REDACTED}"),
    # JWTs (header.payload.signature; the header always starts with {" → eyJ).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # PASETO tokens (unlock tokens are v4.public).
    (re.compile(r"\bv[1-4]\.(?:public|local)\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?"), REDACTED),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"\\]+:)[^@/\s\"\\]+@"), rf"\1{REDACTED}@"),
)
#: Extra fields whose value is a secret by name, whatever it looks like.
_SECRET_KEYS = re.compile(
    r"(?i)^(password|passwd|secret|token|access_token|refresh_token|authorization|cookie|"
    r"api_key|pin|otp|.*_(password|secret|token))$"
)


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.match(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: ts, level, logger, msg, extras, exc — with every
    credential redacted (:func:`redact`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = _redact_value(key, value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        # Once more over the line: values inside non-string extras (dicts, lists). No pattern
        # matches a quote or a backslash, so this cannot break the JSON.
        return redact(json.dumps(entry, default=str))


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON at ``level`` (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
