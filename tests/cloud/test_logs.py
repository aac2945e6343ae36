"""Log records become one JSON object per line, extras kept as keys."""

from __future__ import annotations

import json
import logging
import sys

from cloud.logs import JsonFormatter


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
