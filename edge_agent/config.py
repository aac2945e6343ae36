"""The agent's configuration: one TOML file validated once, at start, into frozen settings.

Load with :func:`load_config`; a bad file raises :class:`~edge_agent.errors.ConfigError`
listing every problem as field, value found and what was expected (``docs/edge.md`` has the
full reference and an example). Nothing here reads the file at import time.

The settings are :class:`msgspec.Struct` classes: the agent must stay within 40 MiB resident
on a Pi, and the validation library used before (the cloud's), with its schema building, cost
about 13 MiB of it. msgspec checks types and constraints (the ``Meta`` in each ``Annotated``)
only when it *decodes*, not when a struct is built in Python. So settings are made with
:func:`parse_config` (a whole file) or :func:`build` (one group); building a struct directly
(``SerialLink(port=...)``) runs only its own rules (``__post_init__``), which is fine for
values the code itself chose and wrong for anything a person typed.

msgspec reports only the first error it meets, with a path but not the value found; to keep
this module's promise (every problem, each with field, value and expectation) a refused
document is walked beside its types (protocols/validation_walk.py) and every bad value is
reported on its own. Rules between tables (:func:`_cross_field_problems`) run once the
tables are valid.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from edge_agent.errors import ConfigError, ConfigProblem
from edge_agent.hosts import is_loopback
from edge_agent.inputs.debounce import DEFAULT_DEBOUNCE_S
from edge_agent.meters.line import MIN_TCP_POLL_INTERVAL_S, rtu_read_time_s
from protocols.errors import RegisterMapError, TopicError
from protocols.ids import validate_device_id
from protocols.meters import (
    Quantity,
    RegisterMap,
    available_models,
    load_map,
    parse_map_text,
    plan_blocks,
)
from protocols.meters.quantities import REQUIRED_QUANTITIES
from protocols.validation import PathParts
from protocols.validation_walk import RuleError, every_problem, has_nonfinite

#: Where the daemon looks when neither ``--config`` nor ``CHARGEMITRA_AGENT_CONFIG`` is given.
DEFAULT_CONFIG_PATH = Path("/etc/chargemitra/agent.toml")
CONFIG_ENV_VAR = "CHARGEMITRA_AGENT_CONFIG"
#: Written by `chargemitra-agent provision` beside the config file, merged over it at load.
CLOUD_OVERLAY = "cloud.toml"

# A ``description`` is what a technician reads as "expected ..." instead of the regex.
# \Z, not $: msgspec matches with re.search, and Python's $ also matches before a final
# newline ("m1\n" would pass here and then be refused on the wire, as MeterId anchors with \Z).
Name = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}\Z", description="1-32 of A-Z a-z 0-9 _ -")
]
UnitId = Annotated[int, Meta(ge=1, le=247)]  # Modbus serial line spec v1.02 §2.2: 1..247
Seconds = Annotated[float, Meta(gt=0, le=3600)]
Port = Annotated[int, Meta(ge=1, le=65535)]
ConnectorId = Annotated[int, Meta(ge=1, le=32)]
NonEmpty = Annotated[str, Meta(min_length=1)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every settings group: immutable, unknown keys refused (a typo is an error).

    msgspec passes both options on to subclasses; each repeats ``frozen=True`` because type
    checkers do not see it inherited.

    Non-finite floats (TOML's ``inf``, ``nan``) are refused by :func:`parse_config`.
    """


class SettingsRuleError(RuleError):
    """A settings group's own rule (``__post_init__``) is broken: which field, what it wants
    (the walk in protocols/validation_walk.py names that field in the report)."""


# Links and relays are tagged unions: the ``transport``/``driver`` key picks the struct, and
# is then not a field but the struct's tag, read back through a property of the same name.


class SerialLink(Settings, frozen=True, tag_field="transport", tag="rtu"):
    """An RS-485 line (Modbus RTU). Meters on the same port share one bus and one lock."""

    port: NonEmpty
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stop_bits: Literal[1, 2] = 1

    @property
    def transport(self) -> Literal["rtu"]:
        return "rtu"

    @property
    def bus_key(self) -> str:
        return f"rtu:{self.port}"


class TcpLink(Settings, frozen=True, tag_field="transport", tag="tcp"):
    """A Modbus TCP peer (a meter with Ethernet, or an RTU-over-TCP gateway)."""

    host: NonEmpty
    port: Port = 502

    @property
    def transport(self) -> Literal["tcp"]:
        return "tcp"

    @property
    def bus_key(self) -> str:
        return f"tcp:{self.host}:{self.port}"


Link = SerialLink | TcpLink


class BusTiming(Settings, frozen=True):
    """How a bus is driven: tuned so a silent meter is noticed within a second."""

    #: Silence kept between the end of one answer and the next request; slow meters
    #: (some SDM firmware) need more than the 3.5 characters the Modbus spec asks for.
    frame_gap_s: Annotated[float, Meta(ge=0, le=1)] = 0.005
    timeout_s: Annotated[float, Meta(gt=0, le=10)] = 0.3
    retries: Annotated[int, Meta(ge=0, le=5)] = 1


class MeterSettings(Settings, frozen=True):
    id: Name
    #: A map in the catalogue (``protocols/meters/*.toml``), or, with ``map_file``, the name
    #: the site gives its own map (shown in status and by ``doctor``).
    model: Annotated[str, Meta(min_length=1, max_length=32, description="1-32 characters")]
    link: Link
    unit_id: UnitId = 1
    #: Down to the bus's own limit: 1 ms on Modbus TCP, the computed wire time of a full read
    #: on an RS-485 line (checked with the bus settings, :func:`_poll_interval_problems`).
    poll_interval_s: Annotated[float, Meta(ge=MIN_TCP_POLL_INTERVAL_S, le=60)] = 1.0
    #: The site's own register map (same TOML format as the catalogue), checked at start.
    map_file: Path | None = None
    #: Read only these quantities of the map (None: all of it); the three a session needs
    #: (import energy, power, L1 current) must be among them.
    quantities: tuple[Quantity, ...] | None = None

    def __post_init__(self) -> None:
        if self.map_file is None and self.model not in available_models():
            raise SettingsRuleError(
                "model",
                self.model,
                f"one of {', '.join(available_models())} (or any name with map_file)",
            )


def register_map_of(meter: MeterSettings) -> RegisterMap:
    """The register map ``meter`` is read with: its ``map_file`` if it has one, else the
    catalogue's ``model``. :class:`~protocols.errors.RegisterMapError` names what is wrong
    (an unreadable file too); the config check (:func:`parse_config`) has already run it."""
    if meter.map_file is None:
        return load_map(meter.model)
    try:
        text = meter.map_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegisterMapError(
            f"{meter.map_file}: cannot read it ({exc})", model=meter.model
        ) from exc
    return parse_map_text(meter.model, text)


class NoRelay(Settings, frozen=True, tag_field="driver", tag="none"):
    """No relay: the agent meters and authorizes but cannot switch power (monitoring only)."""

    @property
    def driver(self) -> Literal["none"]:
        return "none"


class ModbusCoilRelay(Settings, frozen=True, tag_field="driver", tag="modbus-coil"):
    link: Link
    unit_id: UnitId = 1
    coil: Annotated[int, Meta(ge=0, le=65535)] = 0

    @property
    def driver(self) -> Literal["modbus-coil"]:
        return "modbus-coil"


class GpioRelay(Settings, frozen=True, tag_field="driver", tag="gpio"):
    #: BCM pin number (Raspberry Pi header numbering differs; gpiozero uses BCM).
    pin: Annotated[int, Meta(ge=0, le=27)]
    active_high: bool = True

    @property
    def driver(self) -> Literal["gpio"]:
        return "gpio"


class FakeRelay(Settings, frozen=True, tag_field="driver", tag="fake"):
    """An in-memory relay (tests, demos, the simulator)."""

    @property
    def driver(self) -> Literal["fake"]:
        return "fake"


RelaySettings = NoRelay | ModbusCoilRelay | GpioRelay | FakeRelay


class ConnectorSettings(Settings, frozen=True):
    id: ConnectorId
    meter: Name
    max_current_a: Annotated[float, Meta(gt=0, le=1000)]
    relay: RelaySettings


class LimitSettings(Settings, frozen=True):
    """Fail-safe thresholds (defaults from the issue) and per-session caps."""

    overcurrent_ratio: Annotated[float, Meta(ge=1.0, le=2.0)] = 1.10
    overcurrent_hold_s: Seconds = 5.0
    meter_silence_s: Seconds = 3.0
    stuck_relay_check_s: Seconds = 2.0
    #: Power above this with the relay open is a stuck relay; below it, meter noise.
    stuck_relay_power_w: Annotated[float, Meta(gt=0)] = 50.0
    #: Power below this while charging for ``suspended_after_s`` means the EV paused.
    charging_power_w: Annotated[float, Meta(gt=0)] = 100.0
    suspended_after_s: Seconds = 10.0
    #: An import register that jumps more than this between two samples is implausible.
    max_energy_step_wh: Annotated[int, Meta(gt=0)] = 10_000
    max_session_wh: Annotated[int, Meta(gt=0)] | None = None
    max_session_s: Annotated[int, Meta(gt=0)] | None = None


class StoreSettings(Settings, frozen=True):
    path: Path = Path("/var/lib/chargemitra/agent.db")
    max_bytes: Annotated[int, Meta(ge=64 * 1024)] = 256 * 1024 * 1024
    #: How long the store writer may keep retrying a store another process holds locked (a
    #: technician's sqlite3) and still count as healthy; past it systemd's watchdog is no
    #: longer fed and the agent is restarted (edge_agent/watchdog.py).
    locked_max_s: Annotated[float, Meta(ge=10, le=86400)] = 300.0


class AuthSettings(Settings, frozen=True):
    #: Files holding the cloud's Ed25519 public keys (PEM or 32 raw bytes); several during a
    #: key rotation.
    public_key_files: tuple[Path, ...] = ()
    #: File holding the per-device PIN secret (raw bytes, >= 16), handed over at provisioning.
    pin_secret_file: Path | None = None
    cache_max_entries: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    cache_ttl_s: Annotated[int, Meta(ge=1)] = 7 * 24 * 3600
    pin_max_failures: Annotated[int, Meta(ge=1, le=100)] = 5
    pin_lockout_s: Seconds = 300.0
    token_leeway_s: Annotated[float, Meta(ge=0, le=600)] = 30.0


class RecoverySettings(Settings, frozen=True):
    #: At start, an open session found in the store is closed (PowerLoss) or resumed if its
    #: authorization is still valid.
    on_restart: Literal["close", "resume"] = "close"
    #: On SIGTERM/SIGINT, open sessions are ended (Reboot) or kept for the next start.
    on_shutdown: Literal["end", "keep"] = "end"


class SessionSettings(Settings, frozen=True):
    #: How often an open session reports an ``updated`` event (energy so far).
    progress_interval_s: Annotated[float, Meta(ge=5, le=3600)] = 60.0


class ClockSettings(Settings, frozen=True):
    #: "kernel": the wall clock counts as synchronised when the kernel says so (adjtimex,
    #: cleared STA_UNSYNC: set by NTP/chrony/timesyncd). "always": trust it (development,
    #: tests, a site with an RTC).
    trust: Literal["kernel", "always"] = "kernel"
    #: Drills and tests only: a file holding seconds added to the wall clock, re-read when it
    #: changes — steps the agent's clock as NTP would, leaving the host's alone
    #: (edge_agent/clock.py ``SteppedWallClock``; tests/e2e step it mid-session).
    offset_file: Path | None = None


#: Seconds within which the same tag or QR code is one presentation (0: off).
DebounceSeconds = Annotated[float, Meta(ge=0, le=60)]


class Rdm6300Input(Settings, frozen=True):
    port: NonEmpty
    connector: ConnectorId = 1
    baud: Literal[9600] = 9600  # RDM6300 datasheet: fixed 9600 8N1
    #: The reader repeats its frame while a card lies on it: one decision per presentation.
    debounce_s: DebounceSeconds = DEFAULT_DEBOUNCE_S


class HidInput(Settings, frozen=True):
    device: NonEmpty
    kind: Literal["rfid", "keypad", "qr"]
    connector: ConnectorId = 1
    #: For "rfid" and "qr" (a scanner rescans the code in view); keypad lines are not
    #: debounced (a PIN typed twice was typed twice).
    debounce_s: DebounceSeconds = DEFAULT_DEBOUNCE_S


class HttpInput(Settings, frozen=True):
    """The LAN unlock endpoint (:mod:`edge_agent.inputs.http`) and its bounds: anyone on the
    site's LAN can connect, so a flood of idle clients must not use up the agent."""

    enabled: bool = False
    host: str = "0.0.0.0"  # noqa: S104 -- a LAN endpoint for the site's app; off by default
    port: Port = 8470
    #: Connections served at once; one more is answered 503 at once. The agent lowers it to
    #: fit its open-file limit (RLIMIT_NOFILE) with room kept for everything else.
    max_connections: Annotated[int, Meta(ge=1, le=1024)] = 64
    #: Deadline for the request line and headers, from the accept (not an idle timer: a
    #: client dribbling bytes is cut like a silent one).
    header_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    #: Deadline for the body, from the end of the headers.
    body_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0


class InputSettings(Settings, frozen=True):
    rdm6300: tuple[Rdm6300Input, ...] = ()
    hid: tuple[HidInput, ...] = ()
    http: HttpInput = HttpInput()


class MqttSettings(Settings, frozen=True):
    """The cloud link (edge sync). Without a ``[mqtt]`` table the agent runs standalone."""

    host: str
    port: Port = 8883
    tls: bool = True
    #: The broker username; defaults to the device id (the broker's ACL keys on it).
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 60
    session_expiry_s: Annotated[int, Meta(ge=60, le=30 * 24 * 3600)] = 7 * 24 * 3600
    ack_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    #: A message the broker PUBACKs with 0x10 "No matching subscribers" (dropped: cloud
    #: ingest not subscribed, as just after a broker restart) is resent after 0.5-1 times
    #: this, doubling per consecutive 0x10, at most ``ack_timeout_s``; 0: after
    #: ``ack_timeout_s`` (edge_agent/sync/window.py).
    no_subscribers_resend_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    backlog_msgs_per_s: Annotated[float, Meta(gt=0)] = 500.0
    #: The backlog and resends are paced to keep the cloud's ack within about this long
    #: (protocols/pacing.py): a fleet back from a broker restart does not bury it in
    #: resends. 0: not paced. At most half of ``ack_timeout_s`` is used.
    backlog_target_rtt_s: Annotated[float, Meta(ge=0, le=600)] = 5.0
    status_interval_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0
    #: ``sync status`` and ``doctor`` warn when messages wait and the cloud has acknowledged
    #: nothing for this long (edge_agent/tech/acks.py): a broker that takes messages while
    #: cloud ingest is down looks "connected" but nothing leaves the outbox.
    ack_warn_after_s: Annotated[float, Meta(ge=1, le=7 * 24 * 3600)] = 300.0

    def __post_init__(self) -> None:
        if not self.tls and not is_loopback(self.host):
            raise SettingsRuleError(
                "tls",
                self.tls,
                f"true: tls = false is only allowed to a broker on this machine (localhost), "
                f"not {self.host!r}",
            )
        if self.cert_file is not None and self.key_file is None:
            raise SettingsRuleError("key_file", None, "a file: cert_file needs key_file")
        if self.no_subscribers_resend_s > self.ack_timeout_s:
            raise SettingsRuleError(
                "no_subscribers_resend_s",
                self.no_subscribers_resend_s,
                f"at most ack_timeout_s ({self.ack_timeout_s:g}): the ack timeout resends "
                "a dropped message anyway",
            )


class OcppSettings(Settings, frozen=True):
    """The OCPP 1.6-J uplink (edge_agent/ocpp/): the agent as a charge point of an operator's
    CSMS, beside or instead of ``[mqtt]``. Without an ``[ocpp]`` table it is off (and its
    WebSocket client is never imported).

    ``security_profile`` is the OCPP 1.6 security whitepaper's: 1 is HTTP Basic auth
    (charge point id / AuthorizationKey) over ``ws://``, 2 the same over TLS 1.2+ with the
    CSMS's certificate and host name checked (``wss://``). 0 (no auth, ``ws://``) is allowed
    only to a CSMS on this machine.
    """

    #: The CSMS endpoint; the charge point id is appended as the last path segment.
    url: Annotated[str, Meta(pattern=r"^wss?://[^\s]+\Z", description="a ws:// or wss:// URL")]
    #: The identity at the CSMS (default: ``device_id``). OCPP's CiString20 … the URL path.
    charge_point_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,48}\Z")] | None = None
    security_profile: Literal[0, 1, 2] = 2
    #: The initial AuthorizationKey (Basic auth password); a CSMS may change it with
    #: ChangeConfiguration, and the changed key is kept in the store.
    authorization_key_file: Path | None = None
    #: CA bundle for the CSMS's certificate (profile 2); default: the system's.
    ca_file: Path | None = None
    vendor: Annotated[str, Meta(min_length=1, max_length=20)] = "ChargeMitra"
    model: Annotated[str, Meta(min_length=1, max_length=20)] = "EdgeAgent"
    #: The idTag StartTransaction carries for a session started by a ChargeMitra credential
    #: (an unlock token or a booking PIN), which has no OCPP idTag of its own.
    foreign_id_tag: Annotated[str, Meta(pattern=r"^[!-~]{1,20}\Z")] = "ChargeMitra"
    #: How long a call waits for the CSMS's answer before it counts as failed.
    call_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 30.0
    #: Initial values of the OCPP configuration keys of the same names (the CSMS may change
    #: them; changes are kept in the store).
    heartbeat_interval_s: Annotated[int, Meta(ge=0, le=86400)] = 300
    meter_value_sample_interval_s: Annotated[int, Meta(ge=0, le=86400)] = 60
    transaction_message_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    transaction_message_retry_interval_s: Annotated[int, Meta(ge=0, le=86400)] = 60
    #: First and longest wait between connection attempts (exponential with jitter).
    reconnect_min_s: Annotated[float, Meta(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Meta(gt=0, le=3600)] = 120.0

    def __post_init__(self) -> None:
        tls = self.url.startswith("wss://")
        # The WebSocket client (edge_agent/ocpp/websocket.py) connects to urlsplit's host, so
        # the rules below must read the same host: a hand split took "ws://127.0.0.1:1@csms/"
        # for this machine. Credentials in the URL are refused: they belong in
        # authorization_key_file, and a URL is logged and shown by ``sync status``.
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise SettingsRuleError(
                "url", "<redacted>", "a URL without user:password@ (use authorization_key_file)"
            )
        try:
            host = parts.hostname or ""
            _ = parts.port  # raises ValueError on a bad port, as the client would
        except ValueError:
            raise SettingsRuleError("url", self.url, "a URL with a valid host and port") from None
        if not host:
            raise SettingsRuleError("url", self.url, "a URL with a host")
        if self.security_profile == 2 and not tls:
            raise SettingsRuleError("url", self.url, "a wss:// URL: security_profile 2 is TLS")
        if self.security_profile < 2 and tls:
            raise SettingsRuleError("security_profile", self.security_profile, "2 for a wss:// URL")
        if self.security_profile >= 1 and self.authorization_key_file is None:
            raise SettingsRuleError(
                "authorization_key_file", None, "a file: security profiles 1 and 2 use Basic auth"
            )
        if self.security_profile == 0 and not is_loopback(host):
            raise SettingsRuleError(
                "security_profile",
                0,
                f"1 or 2: no authentication is only allowed to a CSMS on this machine, "
                f"not {host!r}",
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise SettingsRuleError("reconnect_max_s", self.reconnect_max_s, ">= reconnect_min_s")


class ControlSettings(Settings, frozen=True):
    socket_path: Path = Path("/run/chargemitra/agent.sock")


class AgentSettings(Settings, frozen=True):
    """The whole configuration of one agent."""

    device_id: str
    meters: Annotated[
        tuple[MeterSettings, ...], Meta(min_length=1, description="at least one [[meters]] table")
    ]
    connectors: Annotated[
        tuple[ConnectorSettings, ...],
        Meta(min_length=1, description="at least one [[connectors]] table"),
    ]
    bus: BusTiming = BusTiming()
    limits: LimitSettings = LimitSettings()
    store: StoreSettings = StoreSettings()
    auth: AuthSettings = AuthSettings()
    recovery: RecoverySettings = RecoverySettings()
    sessions: SessionSettings = SessionSettings()
    clock: ClockSettings = ClockSettings()
    inputs: InputSettings = InputSettings()
    mqtt: MqttSettings | None = None
    control: ControlSettings = ControlSettings()
    ocpp: OcppSettings | None = None

    def meter(self, meter_id: str) -> MeterSettings:
        return next(m for m in self.meters if m.id == meter_id)

    def connector(self, connector_id: int) -> ConnectorSettings:
        return next(c for c in self.connectors if c.id == connector_id)


# --- building settings, and saying what is wrong ------------------------------------------

S = TypeVar("S", bound=Settings)


def _dec_hook(type_: type, obj: object) -> object:
    # msgspec has no pathlib support of its own: a path is TOML text.
    if type_ is Path:
        if isinstance(obj, Path):
            return obj
        if isinstance(obj, str):
            return Path(obj)
        raise TypeError(f"expected a path, got {type(obj).__name__}")
    raise NotImplementedError  # msgspec's hook protocol: "this type is not mine"


def _enc_hook(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError  # msgspec's hook protocol: "this type is not mine"


def _convert(data: object, type_: Any) -> Any:
    # strict: TOML values are typed, so "32" is not a number and true is not 1; an integer is
    # still accepted where a float is wanted (msgspec does that even when strict).
    return msgspec.convert(data, type_, strict=True, dec_hook=_dec_hook)


def build(type_: type[S], data: object, *, source: str = "<settings>") -> S:
    """``data`` (TOML- or JSON-shaped) validated into ``type_``, or :class:`ConfigError`.

    The way to make settings from anything a person wrote: types, ranges, patterns and the
    groups' own rules are all checked, which building a struct directly does not do.
    """
    if not has_nonfinite(data):
        try:
            return _convert(data, type_)  # type: ignore[no-any-return]
        except msgspec.ValidationError:
            pass
    # msgspec stops at the first error; walking the data beside the types finds every one
    # (protocols/validation_walk.py), so a technician fixes the file in one round.
    problems = every_problem(data, type_, _convert)
    raise ConfigError(
        source, [ConfigProblem(_dotted(p.path), p.value, p.expected) for p in problems]
    )


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """The settings as a TOML/JSON-shaped dict (paths as text, lists, tags as keys): the form
    :func:`parse_config` takes back, e.g. with a cloud update merged over it."""
    encoded = msgspec.json.encode(settings, enc_hook=_enc_hook)
    return msgspec.json.decode(encoded, type=dict[str, Any])


def _dotted(path: PathParts) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _cross_field_problems(settings: AgentSettings) -> list[ConfigProblem]:
    """Rules between fields that a single field's type cannot express."""
    problems: list[ConfigProblem] = []
    try:
        validate_device_id(settings.device_id)
    except TopicError:
        problems.append(
            ConfigProblem(
                "device_id", settings.device_id, "1-64 of a-z 0-9 _ - starting with a-z or 0-9"
            )
        )
    meter_ids = [m.id for m in settings.meters]
    for i, meter_id in enumerate(meter_ids):
        if meter_ids.index(meter_id) != i:
            problems.append(ConfigProblem(f"meters.{i}.id", meter_id, "a unique meter id"))
    for i, meter in enumerate(settings.meters):
        problems += _meter_map_problems(f"meters.{i}", meter)
    connector_ids = [c.id for c in settings.connectors]
    for i, conn in enumerate(settings.connectors):
        if connector_ids.index(conn.id) != i:
            problems.append(ConfigProblem(f"connectors.{i}.id", conn.id, "a unique connector id"))
        if conn.meter not in meter_ids:
            problems.append(
                ConfigProblem(f"connectors.{i}.meter", conn.meter, f"one of {meter_ids}")
            )
    # One RS-485 line has one speed and framing: every device on a port must agree.
    serial_by_port: dict[str, tuple[str, SerialLink]] = {}
    links: list[tuple[str, SerialLink | TcpLink]] = [
        (f"meters.{i}.link", m.link) for i, m in enumerate(settings.meters)
    ]
    links += [
        (f"connectors.{i}.relay.link", c.relay.link)
        for i, c in enumerate(settings.connectors)
        if isinstance(c.relay, ModbusCoilRelay)
    ]
    for where, link in links:
        if not isinstance(link, SerialLink):
            continue
        first = serial_by_port.setdefault(link.port, (where, link))
        framing = (link.baud, link.parity, link.stop_bits)
        if (first[1].baud, first[1].parity, first[1].stop_bits) != framing:
            problems.append(
                ConfigProblem(
                    where,
                    f"{link.baud} {link.parity} {link.stop_bits}",
                    f"the framing of {first[0]} on the same port {link.port}",
                )
            )
    problems += _poll_interval_problems(settings)
    for i, rdm in enumerate(settings.inputs.rdm6300):
        if rdm.connector not in connector_ids:
            problems.append(
                ConfigProblem(f"inputs.rdm6300.{i}.connector", rdm.connector, "a connector id")
            )
    for i, hid in enumerate(settings.inputs.hid):
        if hid.connector not in connector_ids:
            problems.append(
                ConfigProblem(f"inputs.hid.{i}.connector", hid.connector, "a connector id")
            )
    return problems


def _meter_map_problems(where: str, meter: MeterSettings) -> list[ConfigProblem]:
    """The meter's own map file loads and is consistent; its quantity choice fits the map."""
    try:
        register_map = register_map_of(meter)
    except RegisterMapError as exc:
        return [
            ConfigProblem(
                f"{where}.map_file",
                str(meter.map_file),
                f"a register map in the catalogue's TOML format (protocols/meters/*.toml): {exc}",
            )
        ]
    if meter.quantities is None:
        return []
    problems: list[ConfigProblem] = []
    in_map = [q.value for q in Quantity if q in register_map.by_quantity]
    for j, quantity in enumerate(meter.quantities):
        if quantity not in register_map.by_quantity:
            problems.append(
                ConfigProblem(
                    f"{where}.quantities.{j}",
                    quantity.value,
                    f"a quantity the {meter.model} map holds: {', '.join(in_map)}",
                )
            )
    missing = sorted(q.value for q in REQUIRED_QUANTITIES - set(meter.quantities))
    if missing:
        problems.append(
            ConfigProblem(
                f"{where}.quantities",
                [q.value for q in meter.quantities],
                f"a list that includes {', '.join(missing)} (sessions bill from the import "
                "energy and the fail-safes watch power and current)",
            )
        )
    return problems


def _poll_interval_problems(settings: AgentSettings) -> list[ConfigProblem]:
    """An RS-485 meter cannot be read faster than its full read takes on the wire (plus the
    bus's frame gap per frame): a shorter interval would only hide a line that cannot keep up.
    Modbus TCP has no such floor beyond the field's own minimum."""
    problems: list[ConfigProblem] = []
    for i, meter in enumerate(settings.meters):
        if not isinstance(meter.link, SerialLink):
            continue
        try:
            counts = [
                block.count
                for block in plan_blocks(register_map_of(meter), quantities=meter.quantities)
            ]
        except RegisterMapError:
            continue  # a map that cannot be loaded is reported by the map rule
        floor = rtu_read_time_s(counts, meter.link.baud, settings.bus.frame_gap_s)
        if meter.poll_interval_s < floor:
            problems.append(
                ConfigProblem(
                    f"meters.{i}.poll_interval_s",
                    meter.poll_interval_s,
                    f"at least {floor:.3f} s: a full {meter.model} read ({len(counts)} frames) "
                    f"takes that long on the wire at {meter.link.baud} baud with frame_gap_s "
                    f"{settings.bus.frame_gap_s}",
                )
            )
    return problems


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> AgentSettings:
    """Validate a parsed TOML document; raise :class:`ConfigError` with every problem."""
    settings = build(AgentSettings, data, source=source)
    problems = _cross_field_problems(settings)
    if problems:
        raise ConfigError(source, problems)
    return settings


def load_config(path: Path) -> AgentSettings:
    """Read and validate the TOML file at ``path``."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            str(path), [ConfigProblem("(file)", str(path), f"a readable UTF-8 file ({exc})")]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem("(file)", str(path), f"TOML: {exc}")]) from None
    overlay = path.with_name(CLOUD_OVERLAY)
    if overlay.is_file():
        # What provisioning received from the cloud (identity, broker, token key) lives in
        # its own file beside the site's, so neither overwrites the other.
        try:
            data = merge_tables(data, tomllib.loads(overlay.read_text("utf-8")))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                str(overlay), [ConfigProblem("(file)", str(overlay), f"readable TOML ({exc})")]
            ) from None
        return parse_config(data, source=f"{path} + {overlay.name}")
    return parse_config(data, source=str(path))


def merge_tables(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def config_path(flag: Path | None) -> Path:
    """The file to load: the flag, else ``$CHARGEMITRA_AGENT_CONFIG``, else the default."""
    if flag is not None:
        return flag
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else DEFAULT_CONFIG_PATH
