"""Versioned message models for every MQTT payload, and their one parser.

Every message carries the envelope (:class:`Envelope`): ``v`` (schema version), ``msg_id``
(a ULID), ``device_id``, ``seq`` (per-device, monotonically increasing in each direction, so
the receiver drops duplicates and sees gaps), ``ts`` (UTC) and ``clock_synced`` (false while
a Raspberry Pi without RTC has not reached NTP yet: its ``ts`` may read 1970).

``seq`` 0 is reserved for the Last Will (:func:`last_will`): the broker publishes it on the
device's behalf at an unknown later time, so it cannot take a place in the sequence.

Parse with :func:`parse_message` (or :func:`parse_for_topic`); it raises one of the
:class:`~protocols.errors.MessageError` subclasses for anything that is not a valid message.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    model_validator,
)

from protocols.enums import (
    AuthListUpdateType,
    AuthorizationStatus,
    CommandName,
    CommandStatus,
    ConnectorStatus,
    CredentialKind,
    MessageKind,
    SessionEventType,
    StopReason,
)
from protocols.errors import (
    InvalidMessage,
    MalformedJSON,
    MessageError,
    PayloadTooLarge,
    TopicError,
    UnsupportedVersion,
)
from protocols.ids import new_ulid, validate_device_id
from protocols.meters.quantities import Quantity
from protocols.topics import Topic, parse_topic

#: The schema version this package writes, and the versions it reads.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

#: Largest payload accepted or produced. Mosquitto's default message size limit is far larger;
#: this bound is ours, so one hostile or buggy device cannot make ingest parse megabytes.
MAX_PAYLOAD_BYTES = 256 * 1024


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _check_device_id(value: str) -> str:
    try:
        return validate_device_id(value)
    except TopicError as exc:
        raise ValueError(str(exc)) from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Ulid = Annotated[str, StringConstraints(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
DeviceId = Annotated[str, AfterValidator(_check_device_id)]
MeterId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Wh = Annotated[int, Field(ge=0, le=2**53)]
ConnectorId = Annotated[int, Field(ge=1, le=32)]
IdTagHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class WireModel(BaseModel):
    """Base of every wire model: immutable, no unknown fields, no NaN or infinities."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_enum_values=False
    )


def _known_version(value: int) -> int:
    if value not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported schema version {value}")
    return value


class Envelope(WireModel):
    """Fields every message carries."""

    # Strict int: JSON `true` and `1.0` are not version 1. Required on the wire (checked in
    # parse_message through model_fields_set), defaulted when our own code builds a message.
    v: Annotated[
        int,
        Field(strict=True, json_schema_extra={"const": SCHEMA_VERSION}),
        AfterValidator(_known_version),
    ] = SCHEMA_VERSION
    msg_id: Ulid
    device_id: DeviceId
    seq: Seq
    ts: UtcDatetime
    clock_synced: bool


# --- telemetry -------------------------------------------------------------------------------


class MeterReading(WireModel):
    """One poll of one meter: decoded quantities in the units their names carry."""

    meter_id: MeterId
    ts: UtcDatetime
    clock_synced: bool
    values: dict[Quantity, float] = Field(min_length=1)


class TelemetryBatch(Envelope):
    """A batch of meter readings (``telemetry`` topic)."""

    readings: list[MeterReading] = Field(min_length=1, max_length=2000)


# --- sessions --------------------------------------------------------------------------------


class CredentialRef(WireModel):
    """Who started a session, without the secret: an id-tag hash, a token ``jti``, a booking id
    for a PIN, or the cloud's user reference for a remote start."""

    kind: CredentialKind
    ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class SessionEvent(Envelope):
    """A charging session event (``session`` topic).

    ``session_id`` is generated on the edge (a ULID), so a session started offline has its
    identity before the cloud hears of it. ``event_seq`` counts 1, 2, 3 … within one session
    so the cloud can apply events in order and notice missing ones. ``offline`` is true when
    the cloud link was down at the time of the event.
    """

    session_id: Ulid
    event: SessionEventType
    event_seq: Annotated[int, Field(ge=1)]
    connector: ConnectorId
    offline: bool
    credential: CredentialRef
    booking_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    started_at: UtcDatetime
    meter_start_wh: Wh
    #: The cumulative import register now (``updated``) or at stop (``stopped``).
    meter_wh: Wh
    #: Energy delivered so far. Never negative: a register that went backwards (meter replaced
    #: or reset) is flagged with ``meter_went_backwards`` and bills what was seen before.
    energy_wh: Wh
    power_w: Annotated[float, Field(ge=0)] | None = None
    stopped_at: UtcDatetime | None = None
    stop_reason: StopReason | None = None
    meter_went_backwards: bool = False

    @model_validator(mode="after")
    def _stop_fields_only_on_stop(self) -> Self:
        stopping = self.event is SessionEventType.STOPPED
        if stopping and (self.stopped_at is None or self.stop_reason is None):
            raise ValueError("a 'stopped' event needs stopped_at and stop_reason")
        if not stopping and (self.stopped_at is not None or self.stop_reason is not None):
            raise ValueError(f"a {self.event.value!r} event has no stopped_at or stop_reason")
        if self.event is SessionEventType.STARTED and self.event_seq != 1:
            raise ValueError("a 'started' event has event_seq 1")
        return self


# --- status ----------------------------------------------------------------------------------


class MeterHealth(WireModel):
    meter_id: MeterId
    model: Annotated[str, StringConstraints(max_length=32)]
    available: bool
    errors: Annotated[int, Field(ge=0)] = 0


class ConnectorState(WireModel):
    connector: ConnectorId
    status: ConnectorStatus
    session_id: Ulid | None = None


class Backlog(WireModel):
    """The agent's outbox: rows not yet acknowledged, age of the oldest, readings thinned."""

    rows: Annotated[int, Field(ge=0)]
    oldest_age_s: Annotated[float, Field(ge=0)] | None = None
    thinned: Annotated[int, Field(ge=0)] = 0


class Status(Envelope):
    """Device status (``status`` topic, retained; also the Last Will with ``online`` false)."""

    online: bool
    agent_version: Annotated[str, StringConstraints(max_length=32)] | None = None
    meters: list[MeterHealth] = Field(default_factory=list, max_length=32)
    connectors: list[ConnectorState] = Field(default_factory=list, max_length=32)
    backlog: Backlog | None = None


def last_will(device_id: str, *, ts: datetime, clock_synced: bool) -> Status:
    """The Last Will the agent registers at connect: ``online`` false, ``seq`` 0 (reserved).

    ``ts`` is the connect time: the broker sends the will later, the cloud uses its own
    receive time for "offline since".
    """
    return Status(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=0,
        ts=ts,
        clock_synced=clock_synced,
        online=False,
    )


# --- commands --------------------------------------------------------------------------------


class StartSession(WireModel):
    """Start a session: carries a signed unlock token the agent verifies like any credential."""

    name: Literal[CommandName.START_SESSION] = CommandName.START_SESSION
    connector: ConnectorId
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class StopSession(WireModel):
    name: Literal[CommandName.STOP_SESSION] = CommandName.STOP_SESSION
    session_id: Ulid
    reason: StopReason = StopReason.REMOTE


class AuthListEntry(WireModel):
    """One local-list entry. In a differential update, ``status`` None removes the entry."""

    id_tag_hash: IdTagHash
    status: AuthorizationStatus | None
    expires_at: UtcDatetime | None = None


class AuthListUpdate(WireModel):
    """Replace (Full) or patch (Differential) the local authorization list.

    ``version`` only moves forward: the agent refuses an update whose version is not newer
    than the one it holds.
    """

    name: Literal[CommandName.AUTH_LIST_UPDATE] = CommandName.AUTH_LIST_UPDATE
    version: Annotated[int, Field(ge=1)]
    update_type: AuthListUpdateType
    entries: list[AuthListEntry] = Field(max_length=2000)

    @model_validator(mode="after")
    def _full_lists_have_statuses(self) -> Self:
        if self.update_type is AuthListUpdateType.FULL and any(
            e.status is None for e in self.entries
        ):
            raise ValueError("a Full update cannot remove entries (status null)")
        return self


class ConfigUpdate(WireModel):
    """A partial agent configuration; validated by the agent, applied atomically or refused."""

    name: Literal[CommandName.CONFIG_UPDATE] = CommandName.CONFIG_UPDATE
    settings: dict[str, JsonValue]


class Diagnostics(WireModel):
    name: Literal[CommandName.DIAGNOSTICS] = CommandName.DIAGNOSTICS


class RelayTest(WireModel):
    name: Literal[CommandName.RELAY_TEST] = CommandName.RELAY_TEST
    connector: ConnectorId


CommandAction = Annotated[
    StartSession | StopSession | AuthListUpdate | ConfigUpdate | Diagnostics | RelayTest,
    Field(discriminator="name"),
]


class Command(Envelope):
    """A cloud → device command (``cmd`` topic). ``seq`` is the cloud's downlink sequence.

    The sender also sets the MQTT 5 message expiry; ``expires_at`` is the device's own check,
    since a message can sit in a persistent session longer than its expiry suggests.
    """

    cmd_id: Ulid
    expires_at: UtcDatetime
    action: CommandAction


class CommandResult(Envelope):
    """The device's answer to one command (``cmd_result`` topic), matched by ``cmd_id``."""

    cmd_id: Ulid
    status: CommandStatus
    auth_status: AuthorizationStatus | None = None
    session_id: Ulid | None = None
    detail: Annotated[str, StringConstraints(max_length=1000)] = ""
    data: dict[str, JsonValue] = Field(default_factory=dict)


# --- authorization decisions -----------------------------------------------------------------

#: What an id-tag decision's reference may be: the tag's hash, or ``malformed`` for a tag that
#: does not normalise (protocols.idtags). Never the tag itself.
_ID_TAG_REF = re.compile(r"[0-9a-f]{64}|malformed")
#: A PIN's reference is a keyed hash (the agent's ``pin_ref``); a PIN is never sent.
_PIN_REF = re.compile(r"pin-[0-9a-f]{32}")


class AuthDecision(Envelope):
    """One authorization decision at the charger (``auth`` topic): the audit trail.

    Every credential presented — accepted or not — produces one, queued in the transaction
    that stored the decision. ``credential`` names it without its secret: an id tag by its
    hash, a token by its ``jti`` (or a hash when its claims could not be read), a PIN by a
    keyed hash; the model refuses a reference that could be the credential itself.
    ``session_id`` is the session an accepted decision starts (the agent reserves the id when
    it decides: a start that then fails on the meter or the relay leaves it without one).
    """

    connector: ConnectorId
    credential: CredentialRef
    status: AuthorizationStatus
    reason: Annotated[str, StringConstraints(max_length=500)]
    decided_at: UtcDatetime
    session_id: Ulid | None = None

    @model_validator(mode="after")
    def _redacted_and_consistent(self) -> Self:
        kind, ref = self.credential.kind, self.credential.ref
        if kind is CredentialKind.ID_TAG and not _ID_TAG_REF.fullmatch(ref):
            raise ValueError("an IdTag decision carries the tag's hash (64 hex), never the tag")
        if kind is CredentialKind.PIN and not _PIN_REF.fullmatch(ref):
            raise ValueError("a Pin decision carries 'pin-' + 32 hex, never the PIN")
        if kind is CredentialKind.TOKEN and ref.startswith("v4."):
            raise ValueError("a Token decision carries the token's jti, never the token")
        if self.session_id is not None and self.status is not AuthorizationStatus.ACCEPTED:
            raise ValueError(f"a {self.status.value} decision starts no session")
        return self


# --- application ack -------------------------------------------------------------------------


SeqRange = tuple[Seq, Seq]


class Ack(Envelope):
    """The cloud's application ack (``ack`` topic): these uplink seqs are committed.

    A broker PUBACK only says the broker has the message (Mosquitto may keep it in memory);
    the agent deletes an outbox row only once an ``Ack`` names its seq. Ranges are inclusive,
    sorted and disjoint. Messages the cloud dead-lettered are acked too (they are stored, with
    the reason); ``dead_lettered`` lists them so the agent can log it.
    """

    ranges: list[SeqRange] = Field(min_length=1, max_length=1000)
    dead_lettered: list[Seq] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _ranges_sorted_and_disjoint(self) -> Self:
        previous_last = -1
        for first, last in self.ranges:
            if first > last:
                raise ValueError(f"range [{first}, {last}] has first > last")
            if first <= previous_last:
                raise ValueError("ranges must be sorted and must not overlap")
            previous_last = last
        return self

    def covers(self, seq: int) -> bool:
        """Whether ``seq`` falls in one of the acknowledged ranges."""
        return any(first <= seq <= last for first, last in self.ranges)


def ack_ranges(seqs: list[int] | set[int]) -> list[SeqRange]:
    """Collapse seq numbers into the sorted inclusive ranges an :class:`Ack` carries."""
    ranges: list[SeqRange] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


# --- parsing ---------------------------------------------------------------------------------

Message = TelemetryBatch | SessionEvent | Status | Command | CommandResult | Ack | AuthDecision

MESSAGE_TYPES: dict[MessageKind, type[Envelope]] = {
    MessageKind.TELEMETRY: TelemetryBatch,
    MessageKind.SESSION: SessionEvent,
    MessageKind.STATUS: Status,
    MessageKind.CMD: Command,
    MessageKind.CMD_RESULT: CommandResult,
    MessageKind.ACK: Ack,
    MessageKind.AUTH: AuthDecision,
}


def parse_message(kind: MessageKind | str, payload: bytes | str) -> Envelope:
    """Parse ``payload`` as a message of ``kind``.

    Raises :class:`PayloadTooLarge`, :class:`MalformedJSON`, :class:`UnsupportedVersion` or
    :class:`InvalidMessage` — all :class:`~protocols.errors.MessageError` — with a message
    that names what was wrong.

    One pass: pydantic parses and validates the JSON (strict, so ``"7"`` is no seq); only a
    failure is looked at again to say *which* kind of failure it was. Ingest parses every
    reading of a fleet through here, so a second parse costs real throughput.
    """
    kind = MessageKind(kind)
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(raw), MAX_PAYLOAD_BYTES, kind=kind.value)
    try:
        message = MESSAGE_TYPES[kind].model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _classify(kind, exc) from None
    if "v" not in message.model_fields_set:
        raise UnsupportedVersion(
            f"{kind.value}: unsupported schema version: v is missing, this build reads "
            f"{sorted(SUPPORTED_VERSIONS)}",
            version=None,
            kind=kind.value,
        )
    return message


def _classify(kind: MessageKind, exc: ValidationError) -> MessageError:
    """Turn pydantic's verdict into our error tree, checked in the order a reader would."""
    errors = exc.errors()
    for err in errors:
        if err["type"] == "json_invalid":
            return MalformedJSON(
                f"{kind.value}: payload is not valid JSON: {err['msg']}", kind=kind.value
            )
        if err["loc"] == () and err["type"] == "model_type":
            return MalformedJSON(
                f"{kind.value}: payload must be a JSON object, got {type(err['input']).__name__}",
                kind=kind.value,
            )
    for err in errors:
        if err["loc"] == ("v",):
            version = err["input"]
            return UnsupportedVersion(
                f"{kind.value}: unsupported schema version v={version!r}, "
                f"this build reads {sorted(SUPPORTED_VERSIONS)}",
                version=version,
                kind=kind.value,
            )
    return _invalid(kind, exc)


def _invalid(kind: MessageKind, exc: ValidationError) -> InvalidMessage:
    fields = tuple(".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors())
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors()[:5]
    )
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return InvalidMessage(f"{kind.value}: {problems}{more}", kind=kind.value, fields=fields)


def parse_for_topic(topic_name: str, payload: bytes | str) -> tuple[Topic, Envelope]:
    """Parse a message received on ``topic_name``; its ``device_id`` must match the topic's.

    The broker's ACL keeps a device on its own topics; this check keeps the payload honest
    about who sent it.
    """
    parsed_topic = parse_topic(topic_name)
    message = parse_message(parsed_topic.kind, payload)
    if message.device_id != parsed_topic.device_id:
        raise InvalidMessage(
            f"{parsed_topic.kind.value}: device_id {message.device_id!r} does not match "
            f"topic device {parsed_topic.device_id!r}",
            kind=parsed_topic.kind.value,
            fields=("device_id",),
        )
    return parsed_topic, message


def encode_message(message: Envelope) -> bytes:
    """Serialise ``message`` to its wire form (compact JSON, UTF-8).

    Raises :class:`PayloadTooLarge` rather than produce a payload a receiver would refuse.
    """
    # No exclude_none: a null can mean something (a differential list entry to remove).
    raw = message.model_dump_json().encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(raw), MAX_PAYLOAD_BYTES)
    return raw
