"""Log records become one JSON object per line, extras kept as keys, credentials redacted."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from cloud.logs import JsonFormatter, redact


def test_record_with_extras_and_exception_is_one_json_line() -> None:
    logger = logging.getLogger("cloud.test")
    record = logger.makeRecord(
        "cloud.test",
        logging.ERROR,
        __file__,
        1,
        "batch %s failed",
        ("b1",),
        None,
        extra={"device_id": "dev-1"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1  # the traceback is escaped inside the JSON string
    entry = json.loads(line)
    assert entry["msg"] == "batch b1 failed"
    assert entry["level"] == "ERROR"
    assert entry["device_id"] == "dev-1"
    assert "ValueError: boom" in entry["exc"]


_JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwMUgifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'1.2.3.4:5 - "WebSocket /ws/chargers/C1?access_token={_JWT}" [accepted]',
            '1.2.3.4:5 - "WebSocket /ws/chargers/C1?access_token=[REDACTED]" [accepted]',
        ),
        ("GET /x?a=1&refresh_token=abc&b=2", "GET /x?a=1&refresh_token=[REDACTED]&b=2"),
        ("POST /p?PASSWORD=x;key=y", "POST /p?PASSWORD=[REDACTED];key=[REDACTED]"),
        (f"Authorization: Bearer {_JWT}", "Authorization: Bearer [REDACTED]"),
        ("bearer.0123456789abcdef0123", "bearer.[REDACTED]"),
        (f"token in a sentence {_JWT} here", "token in a sentence [REDACTED] here"),
        ("unlock v4.public.eyJjaGFyZ2VyIjoiYyJ9c2ln.Zm9vdGVy", "unlock [REDACTED]"),
        (
            "cannot connect to postgresql://cm:s3cret@db:5432/cm",
            "cannot connect to postgresql://cm:[REDACTED]@db:5432/cm",
        ),
        # Prose and ids stay as written.
        ("a bearer token is required", "a bearer token is required"),
        ("GET /c/ABC123?code=9 200", "GET /c/ABC123?code=9 200"),
        ("session 01HX stopped", "session 01HX stopped"),
    ],
)
def test_redact_hides_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_formatted_line_redacts_message_extras_and_exception_and_stays_json() -> None:
    logger = logging.getLogger("cloud.test")
    record = logger.makeRecord(
        "cloud.test",
        logging.WARNING,
        __file__,
        1,
        'refused "%s"',
        (f"/ws/x?access_token={_JWT}",),
        None,
        extra={"password": "hunter2", "refresh_token": "r-1", "detail": {"url": f"?token={_JWT}"}},
    )
    try:
        raise ValueError(f"bad token {_JWT}")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert _JWT not in line
    assert "hunter2" not in line
    assert entry["msg"] == 'refused "/ws/x?access_token=[REDACTED]"'
    assert entry["password"] == entry["refresh_token"] == "[REDACTED]"
    assert entry["detail"] == {"url": "?token=[REDACTED]"}
    assert "ValueError: bad token [REDACTED]" in entry["exc"]
