"""The control socket's requests and answers: msgspec structs, one per ``cmd``.

A request is a tagged union on ``cmd`` (as :mod:`protocols.messages` tags the wire's command
actions on ``name``): decoding it checks every field's type and bounds at the socket, so a
handler receives a typed value, never a dict. Unknown fields are ignored (an older CLI may
send what this agent does not read). Each request names its answer type (:attr:`answer`);
answers are plain structs whose JSON is what the field CLI reads (docs/cli.md): every
answer carries ``ok``, a refusal is :class:`Refused` (``ok: false`` and an ``error``).
Times are ISO strings, as the CLI prints them.

The JSON of every answer is the one the untyped socket answered before (issue 14): the field
CLI and the agent ship as one package version, and tests/cli hold the shapes.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from edge_agent.relay.manual_close import DEFAULT_HOLD_S
from protocols.enums import StopReason

#: A JSON object as built elsewhere (a refused register block: ``Block.to_json``).
JsonObject = dict[str, Any]


# --- answers -----------------------------------------------------------------------------------


class Answer(msgspec.Struct, kw_only=True):
    ok: bool = True


class Refused(Answer, kw_only=True):
    """The request cannot be served; ``error`` says why in a technician's words."""

    ok: bool = False
    error: str


class Done(Answer, kw_only=True):
    """Done (stop, clear_fault): nothing more to say."""


class StartAnswer(Answer, kw_only=True):
    """The decision (``status``, ``reason``) and, when accepted, what the start did."""

    status: str
    reason: str | None
    session_id: str | UnsetType | None = UNSET
    detail: str | UnsetType = UNSET


class ConnectorView(msgspec.Struct, kw_only=True):
    connector: int
    status: str
    session_id: str | None
    energy_wh: int | None
    relay_closed: bool
    closed_by_hand: bool
    fault: str | None


class MeterView(msgspec.Struct, kw_only=True):
    meter_id: str
    #: None until the meter is first polled.
    available: bool | None
    polls: int
    errors: dict[str, int]
    last_error: str
    unavailable_blocks: list[JsonObject]


class WriterView(msgspec.Struct, kw_only=True):
    waiting: int
    committed: int
    commits: int


class TickView(msgspec.Struct, kw_only=True):
    """How late the safety tick woke (edge_agent/safety.py)."""

    ticks: int
    late_p50_ms: float | None
    late_p99_ms: float | None
    late_max_ms: float | None


class ThinnedView(msgspec.Struct, kw_only=True):
    readings: int
    batches: int


class StatusAnswer(Answer, kw_only=True):
    device_id: str
    version: str
    clock_synced: bool
    connectors: list[ConnectorView]
    meters: list[MeterView]
    outbox: int
    store_writer: WriterView
    safety_tick: TickView
    thinned: ThinnedView


class RelayTestAnswer(Answer, kw_only=True):
    """The quick test (``relay_test``, the cloud's relay-test command): read-backs only."""

    closed_read: bool | None
    open_read: bool | None


class RelayCheckAnswer(Answer, kw_only=True):
    """The technician's test (``relay_check``): :class:`edge_agent.relay.check.RelayTestResult`."""

    verdict: str
    detail: str
    closed_read: bool | None
    open_read: bool | None
    power_closed_w: float | None
    power_open_w: float | None


class RelayAnswer(Answer, kw_only=True):
    read_closed: bool | None
    hold_s: float | UnsetType = UNSET


class RelayStateView(msgspec.Struct, kw_only=True):
    connector: int
    commanded_closed: bool
    closed_by_hand: bool
    opens_in_s: float | None
    read_closed: bool | None
    error: str | None


class RelayStateAnswer(Answer, kw_only=True):
    connectors: list[RelayStateView]


class MeterReadView(msgspec.Struct, kw_only=True):
    meter_id: str
    model: str
    unit: int
    values: dict[str, float] | None
    error: str | None
    #: The commonest failure kind when the read failed (timeout, exception, ...).
    kind: str | None
    available: bool | None
    unavailable_blocks: list[JsonObject]


class MeterReadAnswer(Answer, kw_only=True):
    meters: list[MeterReadView]


class MeterRawAnswer(Answer, kw_only=True):
    registers: list[int]


class SyncStatusAnswer(Answer, kw_only=True):
    configured: bool
    connected: bool
    last_error: str | UnsetType | None = UNSET
    last_ack_at: str | UnsetType | None = UNSET
    connects: int | UnsetType = UNSET
    published: int | UnsetType = UNSET
    acked_rows: int | UnsetType = UNSET
    resent: int | UnsetType = UNSET
    #: Uplink the broker PUBACKed 0x10 "No matching subscribers" (it dropped them: cloud
    #: ingest was not subscribed) since the agent started; each was resent.
    dropped_no_subscribers: int | UnsetType = UNSET
    #: Rows handed to the broker and waiting for the cloud's application ack.
    awaiting_ack: int | UnsetType = UNSET
    #: By the monotonic clock: right while the wall clock is unsynced (edge_agent/tech/acks.py).
    ack_silence_s: float | UnsetType = UNSET


class OcppStatusAnswer(Answer, kw_only=True):
    """The OCPP uplink (edge_agent/ocpp/): its link to the CSMS and its transaction queue."""

    configured: bool
    connected: bool = False
    #: The last BootNotification.conf status (Accepted, Pending, Rejected), None before one.
    registration: str | None = None
    url: str | None = None
    charge_point_id: str | None = None
    last_error: str | None = None
    connects: int = 0
    calls: int = 0
    call_errors: int = 0
    last_answer_at: str | None = None
    #: Transaction messages waiting in the store for the CSMS.
    queued: int = 0
    #: Messages dropped after TransactionMessageAttempts CALLERRORs (since the start).
    given_up: int = 0


# --- requests ----------------------------------------------------------------------------------

HoldS = Annotated[float, Meta(gt=0)]


class Request(msgspec.Struct, tag_field="cmd", kw_only=True, frozen=True):
    """Base of the requests: a tagged union on ``cmd``."""

    answer: ClassVar[tuple[type[Answer], ...]]


class Status(Request, tag="status", frozen=True, kw_only=True):
    answer = (StatusAnswer,)


class Start(Request, tag="start", frozen=True, kw_only=True):
    """A credential presented at ``connector``: exactly one of ``id_tag``, ``token``, ``pin``."""

    answer = (StartAnswer, Refused)
    connector: int
    id_tag: str | None = None
    token: str | None = None
    pin: str | None = None


class Stop(Request, tag="stop", frozen=True, kw_only=True):
    answer = (Done, Refused)
    connector: int
    reason: StopReason = StopReason.LOCAL


class ClearFault(Request, tag="clear_fault", frozen=True, kw_only=True):
    answer = (Done, Refused)
    connector: int


class RelayTest(Request, tag="relay_test", frozen=True, kw_only=True):
    answer = (RelayTestAnswer, Refused)
    connector: int


class RelayCheck(Request, tag="relay_check", frozen=True, kw_only=True):
    answer = (RelayCheckAnswer, Refused)
    connector: int
    force: bool = False


class Relay(Request, tag="relay", frozen=True, kw_only=True):
    """Switch the relay by hand (closed: held at most ``hold_s``, watched by the fail-safe)."""

    answer = (RelayAnswer, Refused)
    connector: int
    closed: bool
    force: bool = False
    hold_s: HoldS = DEFAULT_HOLD_S


class RelayState(Request, tag="relay_state", frozen=True, kw_only=True):
    answer = (RelayStateAnswer,)


class MeterRead(Request, tag="meter_read", frozen=True, kw_only=True):
    answer = (MeterReadAnswer, Refused)
    meter: str | None = None


class MeterRaw(Request, tag="meter_raw", frozen=True, kw_only=True):
    answer = (MeterRawAnswer, Refused)
    bus: str
    unit: int
    fc: int
    addr: int
    count: int


class SyncStatus(Request, tag="sync_status", frozen=True, kw_only=True):
    answer = (SyncStatusAnswer,)


class SyncFlush(Request, tag="sync_flush", frozen=True, kw_only=True):
    answer = (SyncStatusAnswer,)


class OcppStatus(Request, tag="ocpp_status", frozen=True, kw_only=True):
    answer = (OcppStatusAnswer,)


AnyRequest = (
    Status
    | Start
    | Stop
    | ClearFault
    | RelayTest
    | RelayCheck
    | Relay
    | RelayState
    | MeterRead
    | MeterRaw
    | SyncStatus
    | SyncFlush
    | OcppStatus
)
