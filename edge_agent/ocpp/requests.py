"""The CSMS's calls this charge point answers, as typed requests (msgspec structs, OCPP's
camelCase on the wire): decoding checks every field's type and bounds, so a handler in
:mod:`edge_agent.ocpp.calls` never sees a dict. Extra fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

IdToken = Annotated[str, Meta(min_length=1, max_length=20)]
ConnectorNo = Annotated[int, Meta(ge=0)]


class Request(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    pass


class RemoteStartTransaction(Request, frozen=True, kw_only=True):
    id_tag: IdToken
    connector_id: Annotated[int, Meta(ge=1)] | None = None
    charging_profile: dict[str, Any] | None = None


class RemoteStopTransaction(Request, frozen=True, kw_only=True):
    transaction_id: int


class ChangeAvailability(Request, frozen=True, kw_only=True):
    connector_id: ConnectorNo
    type: Literal["Inoperative", "Operative"]


class ChangeConfiguration(Request, frozen=True, kw_only=True):
    key: Annotated[str, Meta(max_length=50)]
    value: Annotated[str, Meta(max_length=500)]


class GetConfiguration(Request, frozen=True, kw_only=True):
    key: list[Annotated[str, Meta(max_length=50)]] | None = None


class Reset(Request, frozen=True, kw_only=True):
    type: Literal["Hard", "Soft"]


class TriggerMessage(Request, frozen=True, kw_only=True):
    requested_message: Literal[
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
    ]
    connector_id: Annotated[int, Meta(ge=0)] | None = None


class DataTransfer(Request, frozen=True, kw_only=True):
    vendor_id: Annotated[str, Meta(max_length=255)]
    message_id: Annotated[str, Meta(max_length=50)] | None = None
    data: str | None = None


class ClearCache(Request, frozen=True, kw_only=True):
    pass


class UnlockConnector(Request, frozen=True, kw_only=True):
    connector_id: Annotated[int, Meta(ge=1)]


class GetLocalListVersion(Request, frozen=True, kw_only=True):
    pass


class IdTagInfo(Request, frozen=True, kw_only=True):
    status: Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]
    expiry_date: str | None = None
    parent_id_tag: IdToken | None = None


class AuthorizationData(Request, frozen=True, kw_only=True):
    id_tag: IdToken
    id_tag_info: IdTagInfo | None = None


class SendLocalList(Request, frozen=True, kw_only=True):
    list_version: int
    local_authorization_list: list[AuthorizationData] | None = None
    update_type: Literal["Differential", "Full"]


#: Action name → request type: what the charge point answers.
REQUESTS: dict[str, type[Request]] = {
    "RemoteStartTransaction": RemoteStartTransaction,
    "RemoteStopTransaction": RemoteStopTransaction,
    "ChangeAvailability": ChangeAvailability,
    "ChangeConfiguration": ChangeConfiguration,
    "GetConfiguration": GetConfiguration,
    "Reset": Reset,
    "TriggerMessage": TriggerMessage,
    "DataTransfer": DataTransfer,
    "ClearCache": ClearCache,
    "UnlockConnector": UnlockConnector,
    "GetLocalListVersion": GetLocalListVersion,
    "SendLocalList": SendLocalList,
}
#: OCPP 1.6 actions of profiles this charge point does not offer: NotSupported, not
#: NotImplemented (OCPP-J §4.2.3: a known action the charge point does not support).
UNSUPPORTED = frozenset(
    {
        "CancelReservation",
        "ReserveNow",
        "ClearChargingProfile",
        "GetCompositeSchedule",
        "SetChargingProfile",
        "GetDiagnostics",
        "UpdateFirmware",
    }
)


def decode(action: str, payload: dict[str, Any]) -> Request:
    """``payload`` as ``action``'s request; msgspec.ValidationError when it is not one."""
    return msgspec.convert(payload, REQUESTS[action])
