"""Versioned message models for every MQTT payload, and their one parser.

Every message carries the envelope (:class:`Envelope`): ``v`` (schema version), ``msg_id``
(a ULID), ``device_id``, ``seq`` (per-device, monotonically increasing in each direction, so
the receiver drops duplicates and sees gaps), ``ts`` (UTC) and ``clock_synced`` (false while
a Raspberry Pi without RTC has not reached NTP yet: its ``ts`` may read 1970).

Every value has physical bounds (issue 13: one device's two readings of ``1e308`` once
overflowed the cloud's rollup and stopped ingest):

* a reading's quantities lie in :data:`~protocols.meters.quantities.QUANTITY_BOUNDS` (volts,
  amps, watts, Wh, Hz, power factor — generous, finite; no negative energy);
* every timestamp lies in [:data:`EARLIEST_TS`, :data:`LATEST_TS`): an unsynchronised clock
  may read 1970, nothing reads past 2099;
* a timestamp its message calls synchronised (``clock_synced`` true: the envelope's ``ts``,
  a reading's ``ts``) is not before :data:`EARLIEST_SYNCED_TS` — no device existed then;
* a receiver may refuse a reading stamped further ahead of its own clock than
  :data:`MAX_CLOCK_AHEAD` (:func:`readings_ahead_of`; the cloud does).

``seq`` 0 is reserved for the Last Will (:func:`last_will`): the broker publishes it on the
device's behalf at an unknown later time, so it cannot take a place in the sequence.

Parse with :func:`parse_message` (or :func:`parse_for_topic`); it raises one of the
:class:`~protocols.errors.MessageError` subclasses for anything that is not a valid message.
Serialise with :func:`encode_message`, which refuses to produce a payload a receiver would
refuse.

The models are :mod:`msgspec` structs: the edge agent's resident memory is budgeted, and
msgspec builds no schema machinery at import (its decoders are also faster, which ingest
feels). msgspec checks a field's constraints (patterns, ranges, lengths) when it *decodes*,
never when code builds a struct; so:

* rules between fields, UTC normalisation and the device id are checked in ``__post_init__``,
  which runs on both construction and decoding — building a message that breaks one raises
  ``ValueError`` (or ``TypeError``) at once;
* every other constraint is enforced by :func:`encode_message`, which decodes what it is
  about to send with the receiver's decoder: nothing leaves a process unchecked.

Use :func:`msgspec.structs.replace` for a modified copy, :func:`to_builtins` for plain JSON
values (a dict), :func:`msgspec.convert` to build a model from plain data with every check.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, TypeAlias, cast

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

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
from protocols.ids import DEVICE_ID_MAX_LEN, new_ulid, validate_device_id
from protocols.meters.quantities import QUANTITY_BOUNDS, Quantity
from protocols.topics import Topic, parse_topic
from protocols.validation import error_location

#: The schema version this package writes, and the versions it reads.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

#: Largest payload accepted or produced. Mosquitto's default message size limit is far larger;
#: this bound is ours, so one hostile or buggy device cannot make ingest parse megabytes.
MAX_PAYLOAD_BYTES = 256 * 1024

#: Every timestamp on the wire lies in [EARLIEST_TS, LATEST_TS). A Raspberry Pi without RTC
#: starts at the epoch (docs/protocols.md), so the floor is 1970; the ceiling keeps a broken
#: clock's year 9999 out of the cloud's time partitions and "latest" queries.
EARLIEST_TS: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TS: Final = datetime(2100, 1, 1, tzinfo=UTC)
#: A clock that says it is synchronised cannot read a time before ChargeMitra devices existed.
EARLIEST_SYNCED_TS: Final = datetime(2020, 1, 1, tzinfo=UTC)
#: How far ahead of the receiver's clock a reading's time may be (clock skew, generously);
#: further, and it would stand as the "latest" value for that long.
MAX_CLOCK_AHEAD: Final = timedelta(days=1)
#: A session's power has the bound of a reading's ``power_w``.
MAX_POWER_W: Final = QUANTITY_BOUNDS[Quantity.POWER_W][1]
#: A session's elapsed seconds are below a year (a bound, not a business rule).
MAX_ELAPSED_S: Final = 366 * 86400

if TYPE_CHECKING:
    #: Any JSON value. Type checkers see the recursive union; at run time it is ``Any``
    #: (msgspec does not take recursive aliases), which is exact for what we decode: JSON
    #: decoded into ``Any`` yields only None, bool, int, float, str, list and dict.
    JsonValue: TypeAlias = (
        list["JsonValue"] | dict[str, "JsonValue"] | str | bool | int | float | None
    )
else:
    JsonValue = Any


def _pattern(regex: str) -> str:
    """``regex`` anchored at both ends, for :class:`msgspec.Meta`.

    msgspec matches with :func:`re.search`, and Python's ``$`` also matches before a final
    newline: ``\\Z`` refuses ``"m1\\n"``. ECMA-262 regexes (JSON Schema's) have no ``\\Z``
    and their ``$`` is the end of the text: :mod:`protocols.schemas` writes ``$`` there.
    """
    return f"^{regex}\\Z"


UtcDatetime = Annotated[datetime, Meta(tz=True)]
Ulid = Annotated[str, Meta(pattern=_pattern("[0-7][0-9A-HJKMNP-TV-Z]{25}"))]
#: The pattern documents the rule (and names the field when decoding refuses it);
#: ``Envelope.__post_init__`` applies :func:`protocols.ids.validate_device_id`, the authority.
DeviceId = Annotated[
    str,
    Meta(
        pattern=_pattern(f"[a-z0-9][a-z0-9_-]{{0,{DEVICE_ID_MAX_LEN - 1}}}"),
        max_length=DEVICE_ID_MAX_LEN,
    ),
]
MeterId = Annotated[str, Meta(pattern=_pattern("[A-Za-z0-9_-]{1,32}"))]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Wh = Annotated[int, Meta(ge=0, le=2**53)]
ConnectorId = Annotated[int, Meta(ge=1, le=32)]
IdTagHash = Annotated[str, Meta(pattern=_pattern("[0-9a-f]{64}"))]
NonNegativeInt = Annotated[int, Meta(ge=0)]
# No NaN or infinity: JSON has neither (msgspec refuses the NaN/Infinity tokens as malformed
# JSON and an overflowing number such as 1e999 as out of range). msgspec *encodes* a
# non-finite float as null, which a required float field then refuses on the round trip in
# encode_message; an optional one would take the null, so those are checked in __post_init__.
NonNegativeFloat = Annotated[float, Meta(ge=0)]


def _check_finite(struct: msgspec.Struct, *names: str) -> None:
    for name in names:
        value = getattr(struct, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def _check_json(value: object, path: str) -> None:
    """Refuse what is not a JSON value in a ``JsonValue`` field (decoded JSON always is).

    Built in Python, such a field could hold a datetime, bytes, a set, a non-string key or a
    NaN, which msgspec would quietly turn into a string, base64, a list, a string key or
    null: the receiver would read something else than was meant.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}.{i}")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
            _check_json(item, f"{path}.{key}")
        return
    raise TypeError(f"{path}: a {type(value).__name__} is not a JSON value")


class _DefaultVersion(IntEnum):
    """The ``v`` a message gets when our code builds it without one.

    ``v`` is required on the wire but defaulted in Python. msgspec fills a field missing from
    the payload with the same default, so the default is this distinct object (an ``IntEnum``
    member: equal to 1, encoded as 1) and :func:`parse_message` refuses a decoded message whose
    ``v`` *is* it: the payload had no ``v``.
    """

    CURRENT = SCHEMA_VERSION

    def __repr__(self) -> str:
        return repr(self.value)


_UNSTATED_VERSION: Final = cast("Literal[1]", _DefaultVersion.CURRENT)


def _utc(value: object, name: str) -> datetime:
    """``value`` in UTC; ``ValueError`` for a naive datetime (its zone is a guess)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:30 has no UTC datetime; a ValueError is
        # what msgspec turns into a refusal (anything else would escape parse_message)
        raise ValueError(f"{name} is out of range in UTC") from None


def _normalise_times(struct: msgspec.Struct, *names: str) -> None:
    """Store the datetime fields ``names`` of ``struct`` in UTC (they may be None), and refuse
    one outside [EARLIEST_TS, LATEST_TS)."""
    for name in names:
        value = getattr(struct, name)
        if value is None:
            continue
        # Decoding "…Z" yields tzinfo UTC already: the common case costs one comparison.
        if getattr(value, "tzinfo", None) is not UTC:
            value = _utc(value, name)
            force_setattr(struct, name, value)
        if not EARLIEST_TS <= value < LATEST_TS:
            raise ValueError(f"{name} {value.isoformat()} is outside 1970-01-01 .. 2099-12-31")


def _check_synced(ts: datetime, clock_synced: bool) -> None:
    if clock_synced and ts < EARLIEST_SYNCED_TS:
        raise ValueError(
            f"ts {ts.isoformat()} is before {EARLIEST_SYNCED_TS.date()} on a clock that says "
            "it is synchronised (send clock_synced false)"
        )


class WireModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every wire model: immutable, no unknown fields, keyword arguments.

    Every subclass names ``frozen`` and ``kw_only`` again: msgspec applies ``kw_only`` to the
    fields a class declares (the envelope's defaulted ``v`` comes first), and type checkers
    read ``frozen`` class by class.
    """


class Envelope(WireModel, frozen=True, kw_only=True):
    """Fields every message carries."""

    # Literal: JSON `true` and `1.0` are not version 1, and neither is 2. Required on the wire
    # (parse_message refuses the default, see _DefaultVersion), defaulted in Python.
    v: Literal[1] = _UNSTATED_VERSION
    msg_id: Ulid
    device_id: DeviceId
    seq: Seq
    ts: UtcDatetime
    clock_synced: bool

    def __post_init__(self) -> None:
        try:
            validate_device_id(self.device_id)
        except TopicError as exc:
            raise ValueError(f"device_id: {exc}") from None
        _normalise_times(self, "ts")
        _check_synced(self.ts, self.clock_synced)


# --- telemetry -------------------------------------------------------------------------------


class MeterReading(WireModel, frozen=True, kw_only=True):
    """One poll of one meter: decoded quantities in the units their names carry.

    Each value lies within its quantity's physical bounds (the ``properties`` of ``values``
    in the JSON Schema); ``ts`` is not before 2020 when ``clock_synced`` is true.
    """

    meter_id: MeterId
    ts: UtcDatetime
    clock_synced: bool
    # msgspec's JSON Schema names the keys of str-keyed mappings only; say they are Quantities.
    values: Annotated[
        dict[Quantity, float],
        Meta(
            min_length=1,
            extra_json_schema={
                "propertyNames": {"$ref": "#/$defs/Quantity"},
                "properties": {
                    q.value: {"minimum": low, "maximum": high}
                    for q, (low, high) in QUANTITY_BOUNDS.items()
                },
            },
        ),
    ]

    def __post_init__(self) -> None:
        # _normalise_times and _check_synced, inlined: ingest runs this for every reading of
        # a fleet, and the two calls were a third of its cost.
        ts = self.ts
        if getattr(ts, "tzinfo", None) is not UTC:  # not decoded from "…Z": the general path
            _normalise_times(self, "ts")
            ts = self.ts
        elif not EARLIEST_TS <= ts < LATEST_TS:
            raise ValueError(f"ts {ts.isoformat()} is outside 1970-01-01 .. 2099-12-31")
        if self.clock_synced and ts < EARLIEST_SYNCED_TS:
            _check_synced(ts, self.clock_synced)
        # One dict lookup and a chained comparison per value. `not low <= v <= high` is
        # also true for a NaN built in Python.
        try:
            for quantity, value in self.values.items():
                low, high = QUANTITY_BOUNDS[quantity]
                if low <= value <= high:
                    continue
                raise ValueError(
                    f"values.{quantity}: {value} is outside its bounds [{low}, {high}]"
                )
        except KeyError as exc:  # only code can build such a key; decoding refuses it first
            raise ValueError(f"values: {exc.args[0]!r} is not a Quantity") from None


class TelemetryBatch(Envelope, frozen=True, kw_only=True):
    """A batch of meter readings (``telemetry`` topic)."""

    readings: Annotated[list[MeterReading], Meta(min_length=1, max_length=2000)]


def readings_ahead_of(batch: TelemetryBatch, now: datetime) -> list[int]:
    """Indexes of the readings stamped more than :data:`MAX_CLOCK_AHEAD` after ``now`` (the
    receiver's clock). The contract cannot know the receiver's time; the cloud applies this
    when a batch arrives and refuses the batch if the list is not empty."""
    limit = now + MAX_CLOCK_AHEAD
    return [i for i, reading in enumerate(batch.readings) if reading.ts > limit]


# --- sessions --------------------------------------------------------------------------------


class CredentialRef(WireModel, frozen=True, kw_only=True):
    """Who started a session, without the secret: an id-tag hash, a token ``jti``, a booking
    PIN's :func:`protocols.pins.pin_ref`, or the cloud's user reference for a remote start."""

    kind: CredentialKind
    ref: Annotated[str, Meta(min_length=1, max_length=128)]


class SessionEvent(Envelope, frozen=True, kw_only=True):
    """A charging session event (``session`` topic).

    ``session_id`` is generated on the edge (a ULID), so a session started offline has its
    identity before the cloud hears of it. ``event_seq`` counts 1, 2, 3 … within one session
    so the cloud can apply events in order and notice missing ones. ``offline`` is true when
    the cloud link was down at the time of the event.
    """

    session_id: Ulid
    event: SessionEventType
    event_seq: Annotated[int, Meta(ge=1)]
    connector: ConnectorId
    offline: bool
    credential: CredentialRef
    booking_id: Annotated[str, Meta(max_length=64)] | None = None
    started_at: UtcDatetime
    meter_start_wh: Wh
    #: The cumulative import register now (``updated``) or at stop (``stopped``).
    meter_wh: Wh
    #: Energy delivered so far. Never negative: a register that went backwards (meter replaced
    #: or reset) is flagged with ``meter_went_backwards`` and bills what was seen before.
    energy_wh: Wh
    power_w: Annotated[float, Meta(ge=0, le=MAX_POWER_W)] | None = None
    stopped_at: UtcDatetime | None = None
    stop_reason: StopReason | None = None
    meter_went_backwards: bool = False
    #: Seconds the session ran by the agent's monotonic clock, across restarts (``stopped``
    #: events; optional: older agents omit it). The cloud bills time from it, as the wall
    #: clock's ``stopped_at - started_at`` is wrong after an NTP step.
    elapsed_s: Annotated[float, Meta(ge=0, le=MAX_ELAPSED_S)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _normalise_times(self, "started_at", "stopped_at")
        _check_finite(self, "elapsed_s")
        _check_finite(self, "power_w")
        stopping = self.event is SessionEventType.STOPPED
        if stopping and (self.stopped_at is None or self.stop_reason is None):
            raise ValueError("a 'stopped' event needs stopped_at and stop_reason")
        if not stopping and (self.stopped_at is not None or self.stop_reason is not None):
            raise ValueError(f"a {self.event.value!r} event has no stopped_at or stop_reason")
        if self.event is SessionEventType.STARTED and self.event_seq != 1:
            raise ValueError("a 'started' event has event_seq 1")


# --- status ----------------------------------------------------------------------------------


class MeterHealth(WireModel, frozen=True, kw_only=True):
    """One meter as the agent sees it when the status is built.

    ``available``: its last poll answered (false before the first answer). ``errors``: failed
    polls since the agent started. ``last_reading_age_s``: seconds since its last good
    reading, by the agent's monotonic clock (right even while the wall clock is unsynced);
    absent when it has not answered since the agent started. ``unavailable_blocks``: blocks
    of its register map the meter refused with a Modbus exception (e.g. ``"input 342-351"``,
    register table and zero-based addresses); their quantities are missing from its readings.
    ``consecutive_errors``: failed polls since its last good one (0 while it answers);
    ``last_error``: what the last failed poll said (absent if none has failed).
    """

    meter_id: MeterId
    model: Annotated[str, Meta(max_length=32)]
    available: bool
    errors: NonNegativeInt = 0
    consecutive_errors: NonNegativeInt = 0
    last_error: Annotated[str, Meta(max_length=120)] | None = None
    last_reading_age_s: NonNegativeFloat | None = None
    unavailable_blocks: Annotated[
        list[Annotated[str, Meta(max_length=32)]], Meta(max_length=64)
    ] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        _check_finite(self, "last_reading_age_s")


class ConnectorState(WireModel, frozen=True, kw_only=True):
    """One connector: its state-machine status and the session open on it, if any."""

    connector: ConnectorId
    status: ConnectorStatus
    session_id: Ulid | None = None


class Backlog(WireModel, frozen=True, kw_only=True):
    """The agent's outbox: rows not yet acknowledged, age of the oldest, readings thinned."""

    rows: NonNegativeInt
    oldest_age_s: NonNegativeFloat | None = None
    thinned: NonNegativeInt = 0

    def __post_init__(self) -> None:
        _check_finite(self, "oldest_age_s")


class Status(Envelope, frozen=True, kw_only=True):
    """Device status (``status`` topic, retained; also the Last Will with ``online`` false)."""

    online: bool
    agent_version: Annotated[str, Meta(max_length=32)] | None = None
    meters: Annotated[list[MeterHealth], Meta(max_length=32)] = msgspec.field(default_factory=list)
    connectors: Annotated[list[ConnectorState], Meta(max_length=32)] = msgspec.field(
        default_factory=list
    )
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


class _Action(WireModel, frozen=True, tag_field="name"):
    """Base of the command actions: a tagged union on ``name``.

    On the wire ``name`` is an ordinary first field; in Python it is a class constant
    (``action.name``), as msgspec keeps the tag out of the constructor.
    """

    name: ClassVar[CommandName]


class StartSession(_Action, tag=CommandName.START_SESSION.value, frozen=True, kw_only=True):
    """Start a session: carries a signed unlock token the agent verifies like any credential."""

    name: ClassVar[CommandName] = CommandName.START_SESSION
    connector: ConnectorId
    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class StopSession(_Action, tag=CommandName.STOP_SESSION.value, frozen=True, kw_only=True):
    name: ClassVar[CommandName] = CommandName.STOP_SESSION
    session_id: Ulid
    reason: StopReason = StopReason.REMOTE


class AuthListEntry(WireModel, frozen=True, kw_only=True):
    """One local-list entry. In a differential update, ``status`` None removes the entry."""

    id_tag_hash: IdTagHash
    status: AuthorizationStatus | None
    expires_at: UtcDatetime | None = None

    def __post_init__(self) -> None:
        _normalise_times(self, "expires_at")


class AuthListUpdate(_Action, tag=CommandName.AUTH_LIST_UPDATE.value, frozen=True, kw_only=True):
    """Replace (Full) or patch (Differential) the local authorization list.

    ``version`` only moves forward: the agent refuses an update whose version is not newer
    than the one it holds.
    """

    name: ClassVar[CommandName] = CommandName.AUTH_LIST_UPDATE
    version: Annotated[int, Meta(ge=1)]
    update_type: AuthListUpdateType
    entries: Annotated[list[AuthListEntry], Meta(max_length=2000)]

    def __post_init__(self) -> None:
        if self.update_type is AuthListUpdateType.FULL and any(
            e.status is None for e in self.entries
        ):
            raise ValueError("a Full update cannot remove entries (status null)")


class ConfigUpdate(_Action, tag=CommandName.CONFIG_UPDATE.value, frozen=True, kw_only=True):
    """A partial agent configuration; validated by the agent, applied atomically or refused."""

    name: ClassVar[CommandName] = CommandName.CONFIG_UPDATE
    settings: dict[str, JsonValue]

    def __post_init__(self) -> None:
        _check_json(self.settings, "settings")


class Diagnostics(_Action, tag=CommandName.DIAGNOSTICS.value, frozen=True, kw_only=True):
    name: ClassVar[CommandName] = CommandName.DIAGNOSTICS


class RelayTest(_Action, tag=CommandName.RELAY_TEST.value, frozen=True, kw_only=True):
    name: ClassVar[CommandName] = CommandName.RELAY_TEST
    connector: ConnectorId


#: A PIN's reference is a keyed hash (``protocols.pins.pin_ref``); a PIN is never sent.
PinRef = Annotated[str, Meta(pattern=_pattern("pin-[0-9a-f]{32}"))]


class RevokedPin(WireModel, frozen=True, kw_only=True):
    """A booking PIN that must no longer start a session, until its window ends (``until``,
    after which it is refused anyway and the agent may forget it)."""

    ref: PinRef
    until: UtcDatetime

    def __post_init__(self) -> None:
        _normalise_times(self, "until")


class RevokePins(_Action, tag=CommandName.REVOKE_PINS.value, frozen=True, kw_only=True):
    """Booking PINs whose booking was cancelled or declined, by reference. The agent stores
    them and refuses them (Blocked) from then on, offline too. Adding only: each command
    carries every revocation of the device still inside its window, so a lost one is
    repaired by the next."""

    name: ClassVar[CommandName] = CommandName.REVOKE_PINS
    pins: Annotated[list[RevokedPin], Meta(min_length=1, max_length=2000)]


class ExtendSession(_Action, tag=CommandName.EXTEND_SESSION.value, frozen=True, kw_only=True):
    """The booking of running session ``session_id`` was extended (and its top-up quoted):
    the session's authorization now runs until ``until``. The agent keeps the later of this
    and what it holds (never shortens), so a repeated or late command changes nothing."""

    name: ClassVar[CommandName] = CommandName.EXTEND_SESSION
    session_id: Ulid
    until: UtcDatetime

    def __post_init__(self) -> None:
        _normalise_times(self, "until")


CommandAction: TypeAlias = (
    StartSession
    | StopSession
    | AuthListUpdate
    | ConfigUpdate
    | Diagnostics
    | RelayTest
    | RevokePins
    | ExtendSession
)


class Command(Envelope, frozen=True, kw_only=True):
    """A cloud → device command (``cmd`` topic). ``seq`` is the cloud's downlink sequence.

    The sender also sets the MQTT 5 message expiry; ``expires_at`` is the device's own check,
    since a message can sit in a persistent session longer than its expiry suggests.
    """

    cmd_id: Ulid
    expires_at: UtcDatetime
    action: CommandAction

    def __post_init__(self) -> None:
        super().__post_init__()
        _normalise_times(self, "expires_at")


class CommandResult(Envelope, frozen=True, kw_only=True):
    """The device's answer to one command (``cmd_result`` topic), matched by ``cmd_id``."""

    cmd_id: Ulid
    status: CommandStatus
    auth_status: AuthorizationStatus | None = None
    session_id: Ulid | None = None
    detail: Annotated[str, Meta(max_length=1000)] = ""
    data: dict[str, JsonValue] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_json(self.data, "data")


# --- authorization decisions -----------------------------------------------------------------

#: What an id-tag decision's reference may be: the tag's hash, or ``malformed`` for a tag that
#: does not normalise (protocols.idtags). Never the tag itself.
_ID_TAG_REF = re.compile(r"[0-9a-f]{64}|malformed")
#: A PIN's reference is a keyed hash (the agent's ``pin_ref``); a PIN is never sent.
_PIN_REF = re.compile(r"pin-[0-9a-f]{32}")


class AuthDecision(Envelope, frozen=True, kw_only=True):
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
    reason: Annotated[str, Meta(max_length=500)]
    decided_at: UtcDatetime
    session_id: Ulid | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _normalise_times(self, "decided_at")
        kind, ref = self.credential.kind, self.credential.ref
        if kind is CredentialKind.ID_TAG and not _ID_TAG_REF.fullmatch(ref):
            raise ValueError("an IdTag decision carries the tag's hash (64 hex), never the tag")
        if kind is CredentialKind.PIN and not _PIN_REF.fullmatch(ref):
            raise ValueError("a Pin decision carries 'pin-' + 32 hex, never the PIN")
        if kind is CredentialKind.TOKEN and ref.startswith("v4."):
            raise ValueError("a Token decision carries the token's jti, never the token")
        if self.session_id is not None and self.status is not AuthorizationStatus.ACCEPTED:
            raise ValueError(f"a {self.status.value} decision starts no session")


# --- application ack -------------------------------------------------------------------------


SeqRange: TypeAlias = tuple[Seq, Seq]


class Ack(Envelope, frozen=True, kw_only=True):
    """The cloud's application ack (``ack`` topic): these uplink seqs are committed.

    A broker PUBACK only says the broker has the message (Mosquitto may keep it in memory);
    the agent deletes an outbox row only once an ``Ack`` names its seq. Ranges are inclusive,
    sorted and disjoint. Messages the cloud dead-lettered are acked too (they are stored, with
    the reason); ``dead_lettered`` lists them so the agent can log it.
    """

    ranges: Annotated[list[SeqRange], Meta(min_length=1, max_length=1000)]
    dead_lettered: Annotated[list[Seq], Meta(max_length=1000)] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        previous_last = -1
        for first, last in self.ranges:
            if first > last:
                raise ValueError(f"range [{first}, {last}] has first > last")
            if first <= previous_last:
                raise ValueError("ranges must be sorted and must not overlap")
            previous_last = last

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


# --- parsing and encoding --------------------------------------------------------------------

Message: TypeAlias = (
    TelemetryBatch | SessionEvent | Status | Command | CommandResult | Ack | AuthDecision
)

MESSAGE_TYPES: dict[MessageKind, type[Envelope]] = {
    MessageKind.TELEMETRY: TelemetryBatch,
    MessageKind.SESSION: SessionEvent,
    MessageKind.STATUS: Status,
    MessageKind.CMD: Command,
    MessageKind.CMD_RESULT: CommandResult,
    MessageKind.ACK: Ack,
    MessageKind.AUTH: AuthDecision,
}
_KIND_OF_TYPE: dict[type[Envelope], MessageKind] = {t: k for k, t in MESSAGE_TYPES.items()}

# One decoder per kind, built once: building one compiles the type's validation plan, and
# ingest decodes every message of a fleet. Strict (msgspec's default): "7" is no seq, true no
# version. Decoding runs field constraints, then each struct's __post_init__.
_DECODERS: dict[MessageKind, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(model) for kind, model in MESSAGE_TYPES.items()
}
_ENCODER = msgspec.json.Encoder()
# Reads a refused payload again without a type. float_hook: 1e999 is valid JSON (a field of
# the message type refuses it, as out of range), and must not hide what else is wrong.
_UNTYPED = msgspec.json.Decoder(float_hook=float)


def parse_message(kind: MessageKind | str, payload: bytes | str) -> Envelope:
    """Parse ``payload`` as a message of ``kind``.

    Raises :class:`PayloadTooLarge`, :class:`MalformedJSON`, :class:`UnsupportedVersion` or
    :class:`InvalidMessage` — all :class:`~protocols.errors.MessageError` — with a message
    that names what was wrong. msgspec stops at the first problem, so an
    :class:`InvalidMessage` names one field.

    One pass: msgspec parses and validates the JSON together; only a failure is looked at
    again to say *which* kind of failure it was. Ingest parses every reading of a fleet
    through here, so a second parse of every message would cost real throughput.
    """
    kind = MessageKind(kind)
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(raw), MAX_PAYLOAD_BYTES, kind=kind.value)
    try:
        message: Envelope = _DECODERS[kind].decode(raw)
    except msgspec.ValidationError as exc:
        raise _classify(kind, raw, exc) from None
    except msgspec.DecodeError as exc:
        raise _malformed(kind, str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec decodes a string's UTF-8 when it keeps it
        raise _malformed(kind, f"not UTF-8: {exc}") from None
    except RecursionError:
        raise _malformed(kind, "nested too deeply") from None
    if message.v is _UNSTATED_VERSION:  # the payload had no "v": msgspec filled the default
        raise _unsupported(kind, None)
    return message


def _malformed(kind: MessageKind, why: str) -> MalformedJSON:
    return MalformedJSON(f"{kind.value}: payload is not valid JSON: {why}", kind=kind.value)


def _unsupported(kind: MessageKind, version: object) -> UnsupportedVersion:
    said = "v is missing" if version is None else f"v={version!r}"
    return UnsupportedVersion(
        f"{kind.value}: unsupported schema version: {said}, "
        f"this build reads {sorted(SUPPORTED_VERSIONS)}",
        version=version,
        kind=kind.value,
    )


_JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _classify(kind: MessageKind, raw: bytes, exc: msgspec.ValidationError) -> MessageError:
    """Turn msgspec's verdict into our error tree, checked in the order a reader would: is it
    JSON, an object, a version we read — only then, which field is wrong.

    msgspec reports the first problem in document order (a wrong ``seq`` before a truncated
    end, a bad field before a ``"v": 2`` written last), so the payload is read again, without
    a type, to ask the earlier questions first. Only refused payloads pay for it.
    """
    try:
        data = _UNTYPED.decode(raw)
    except msgspec.ValidationError:  # valid JSON that cannot be held; not expected
        return _invalid(kind, exc)
    except msgspec.DecodeError as err:
        return _malformed(kind, str(err))
    except UnicodeDecodeError as err:
        return _malformed(kind, f"not UTF-8: {err}")
    except RecursionError:
        return _malformed(kind, "nested too deeply")
    if not isinstance(data, dict):
        got = _JSON_TYPE_NAMES.get(type(data), "null")
        return MalformedJSON(
            f"{kind.value}: payload must be a JSON object, got {got}", kind=kind.value
        )
    if "v" not in data:
        return _unsupported(kind, None)
    version = data["v"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        return _unsupported(kind, version)
    return _invalid(kind, exc)


def _where(exc: msgspec.ValidationError) -> tuple[str, str]:
    """``(dotted path, message)`` of msgspec's error: ``$.readings[0].values`` becomes
    ``readings.0.values``; the root is ``(root)``."""
    parts, problem = error_location(exc)
    return ".".join(str(p) for p in parts) or "(root)", problem


def _invalid(kind: MessageKind, exc: msgspec.ValidationError, *, doing: str = "") -> InvalidMessage:
    where, problem = _where(exc)
    return InvalidMessage(
        f"{kind.value}: {doing}{where}: {problem}", kind=kind.value, fields=(where,)
    )


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


def kind_of(message: Envelope) -> MessageKind:
    """The topic kind ``message`` travels on (``TypeError`` for an Envelope of no kind)."""
    try:
        return _KIND_OF_TYPE[type(message)]
    except KeyError:
        raise TypeError(f"{type(message).__name__} is not a message type") from None


def encode_message(message: Envelope) -> bytes:
    """Serialise ``message`` to its wire form (compact JSON, UTF-8).

    Raises :class:`PayloadTooLarge` rather than produce a payload a receiver would refuse,
    and :class:`InvalidMessage` (naming the field) for a message that breaks a constraint.
    """
    kind = kind_of(message)
    # Every field is written, nulls included: a null can mean something (a differential list
    # entry to remove). Datetimes are RFC 3339 in UTC with "Z" (__post_init__ made them UTC).
    try:
        raw = _ENCODER.encode(message)
    except TypeError as exc:  # a value JSON cannot carry (in settings or data)
        raise InvalidMessage(
            f"{kind.value}: cannot encode: {exc}", kind=kind.value, fields=("(root)",)
        ) from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(raw), MAX_PAYLOAD_BYTES, kind=kind.value)
    # msgspec checks patterns, ranges and lengths only when decoding, never when our code
    # builds a struct: decode what we are about to send with the receiver's own decoder, so
    # a bad field (a negative seq, a 2001st reading, a NaN encoded as null) fails here, at the
    # sender, naming the field — not as a dead letter at the far end. Affordable: the agent
    # sends a few messages a second and the cloud a few commands and acks per batch.
    try:
        _DECODERS[kind].decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(kind, exc, doing="refusing to send an invalid message: ") from None
    return raw


def to_builtins(model: WireModel) -> dict[str, Any]:
    """``model`` (a message or a part of one) as plain JSON values — enums as their values,
    datetimes as RFC 3339 text — as :func:`encode_message` writes it, for embedding in a
    larger JSON document. Unchecked, like :func:`to_json`."""
    data: dict[str, Any] = msgspec.to_builtins(model)
    return data


def to_json(model: WireModel) -> bytes:
    """``model`` (a message or a part of one) as compact JSON, in its wire form.

    Unchecked, unlike :func:`encode_message`: for what was parsed already (storing or
    forwarding a received message) or measuring a part. Send with :func:`encode_message`.
    """
    return _ENCODER.encode(model)
