"""OCPP-J framing (OCPP 1.6 JSON specification §4): the three message types on the WebSocket,
encoded and decoded, pure.

::

    CALL        [2, "<uniqueId>", "<Action>", {payload}]
    CALLRESULT  [3, "<uniqueId>", {payload}]
    CALLERROR   [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {errorDetails}]

A frame that is not one of these is a :class:`~edge_agent.errors.OcppFrameError`; the link
answers a CALL it cannot read with a CALLERROR (§4.2.3) and drops anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge_agent.errors import OcppFrameError

#: A JSON object as the payload of a frame.
Payload = dict[str, Any]

CALL, CALL_RESULT, CALL_ERROR = 2, 3, 4
#: OCPP-J §4.1.3: the unique id is at most 36 characters.
MAX_ID_CHARS = 36


class ErrorCode(StrEnum):
    """OCPP-J §4.2.3 CallError codes (1.6 spelling, including "Occurence")."""

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMATION_VIOLATION = "FormationViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: Payload


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: Payload


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str = ""
    details: Payload = field(default_factory=dict)


Frame = Call | CallResult | CallError


def encode(frame: Frame) -> str:
    """The frame as the text message sent (compact JSON)."""
    match frame:
        case Call(uid, action, payload):
            body: list[Any] = [CALL, uid, action, payload]
        case CallResult(uid, payload):
            body = [CALL_RESULT, uid, payload]
        case CallError(uid, code, description, details):
            body = [CALL_ERROR, uid, code, description, details]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode(text: str | bytes) -> Frame:
    """A received text message as a frame; :class:`OcppFrameError` (with the unique id when
    one could be read, so a bad CALL can still be answered) when it is not one."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OcppFrameError(f"not JSON: {exc}") from exc
    if (
        not isinstance(body, list)
        or len(body) < 3
        or body[0] not in (CALL, CALL_RESULT, CALL_ERROR)
    ):
        raise OcppFrameError("not an OCPP-J array [messageTypeId, uniqueId, ...]")
    kind, uid = body[0], body[1]
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_ID_CHARS:
        raise OcppFrameError(f"bad uniqueId {uid!r}")
    if kind == CALL:
        if len(body) != 4 or not isinstance(body[2], str) or not isinstance(body[3], dict):
            raise OcppFrameError("a CALL is [2, uniqueId, action, {payload}]", unique_id=uid)
        return Call(uid, body[2], body[3])
    if kind == CALL_RESULT:
        if len(body) != 3 or not isinstance(body[2], dict):
            raise OcppFrameError("a CALLRESULT is [3, uniqueId, {payload}]", unique_id=uid)
        return CallResult(uid, body[2])
    if len(body) != 5 or not isinstance(body[2], str) or not isinstance(body[3], str):
        raise OcppFrameError("a CALLERROR is [4, uniqueId, code, description, {details}]")
    details = body[4] if isinstance(body[4], dict) else {}
    return CallError(uid, body[2], body[3], details)
