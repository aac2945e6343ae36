"""The agent's configuration: one TOML file validated once, at start, into frozen settings.

Load with :func:`load_config`; a bad file raises :class:`~edge_agent.errors.ConfigError`
listing every problem as field, value found and what was expected (``docs/edge.md`` has the
full reference and an example). Nothing here reads the file at import time.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from edge_agent.errors import ConfigError, ConfigProblem
from edge_agent.hosts import is_loopback
from edge_agent.inputs.debounce import DEFAULT_DEBOUNCE_S
from protocols.errors import TopicError
from protocols.ids import validate_device_id
from protocols.meters import available_models

#: Where the daemon looks when neither ``--config`` nor ``CHARGEMITRA_AGENT_CONFIG`` is given.
DEFAULT_CONFIG_PATH = Path("/etc/chargemitra/agent.toml")
CONFIG_ENV_VAR = "CHARGEMITRA_AGENT_CONFIG"
#: Written by `chargemitra-agent provision` beside the config file, merged over it at load.
CLOUD_OVERLAY = "cloud.toml"

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
UnitId = Annotated[int, Field(ge=1, le=247)]  # Modbus serial line spec v1.02 §2.2: 1..247
Seconds = Annotated[float, Field(gt=0, le=3600)]


class Settings(BaseModel):
    """Base of every settings group: immutable, unknown keys refused (a typo is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SerialLink(Settings):
    """An RS-485 line (Modbus RTU). Meters on the same port share one bus and one lock."""

    transport: Literal["rtu"]
    port: Annotated[str, StringConstraints(min_length=1)]
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stop_bits: Literal[1, 2] = 1

    @property
    def bus_key(self) -> str:
        return f"rtu:{self.port}"


class TcpLink(Settings):
    """A Modbus TCP peer (a meter with Ethernet, or an RTU-over-TCP gateway)."""

    transport: Literal["tcp"]
    host: Annotated[str, StringConstraints(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502

    @property
    def bus_key(self) -> str:
        return f"tcp:{self.host}:{self.port}"


Link = Annotated[SerialLink | TcpLink, Field(discriminator="transport")]


class BusTiming(Settings):
    """How a bus is driven: tuned so a silent meter is noticed within a second."""

    #: Silence kept between the end of one answer and the next request; slow meters
    #: (some SDM firmware) need more than the 3.5 characters the Modbus spec asks for.
    frame_gap_s: Annotated[float, Field(ge=0, le=1)] = 0.005
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.3
    retries: Annotated[int, Field(ge=0, le=5)] = 1


class MeterSettings(Settings):
    id: Name
    model: str
    link: Link
    unit_id: UnitId = 1
    poll_interval_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0

    @model_validator(mode="after")
    def _known_model(self) -> MeterSettings:
        if self.model not in available_models():
            raise ValueError(f"model {self.model!r} is not one of {', '.join(available_models())}")
        return self


class NoRelay(Settings):
    """No relay: the agent meters and authorizes but cannot switch power (monitoring only)."""

    driver: Literal["none"]


class ModbusCoilRelay(Settings):
    driver: Literal["modbus-coil"]
    link: Link
    unit_id: UnitId = 1
    coil: Annotated[int, Field(ge=0, le=65535)] = 0


class GpioRelay(Settings):
    driver: Literal["gpio"]
    #: BCM pin number (Raspberry Pi header numbering differs; gpiozero uses BCM).
    pin: Annotated[int, Field(ge=0, le=27)]
    active_high: bool = True


class FakeRelay(Settings):
    """An in-memory relay (tests, demos, the simulator)."""

    driver: Literal["fake"]


RelaySettings = Annotated[
    NoRelay | ModbusCoilRelay | GpioRelay | FakeRelay, Field(discriminator="driver")
]


class ConnectorSettings(Settings):
    id: Annotated[int, Field(ge=1, le=32)]
    meter: Name
    max_current_a: Annotated[float, Field(gt=0, le=1000)]
    relay: RelaySettings


class LimitSettings(Settings):
    """Fail-safe thresholds (defaults from the issue) and per-session caps."""

    overcurrent_ratio: Annotated[float, Field(ge=1.0, le=2.0)] = 1.10
    overcurrent_hold_s: Seconds = 5.0
    meter_silence_s: Seconds = 3.0
    stuck_relay_check_s: Seconds = 2.0
    #: Power above this with the relay open is a stuck relay; below it, meter noise.
    stuck_relay_power_w: Annotated[float, Field(gt=0)] = 50.0
    #: Power below this while charging for ``suspended_after_s`` means the EV paused.
    charging_power_w: Annotated[float, Field(gt=0)] = 100.0
    suspended_after_s: Seconds = 10.0
    #: An import register that jumps more than this between two samples is implausible.
    max_energy_step_wh: Annotated[int, Field(gt=0)] = 10_000
    max_session_wh: Annotated[int, Field(gt=0)] | None = None
    max_session_s: Annotated[int, Field(gt=0)] | None = None


class StoreSettings(Settings):
    path: Path = Path("/var/lib/chargemitra/agent.db")
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 256 * 1024 * 1024
    #: Readings are written in batches, at most this often.
    batch_interval_s: Annotated[float, Field(ge=1.0, le=60)] = 1.0


class AuthSettings(Settings):
    #: Files holding the cloud's Ed25519 public keys (PEM or 32 raw bytes); several during a
    #: key rotation.
    public_key_files: tuple[Path, ...] = ()
    #: File holding the per-device PIN secret (raw bytes, >= 16), handed over at provisioning.
    pin_secret_file: Path | None = None
    cache_max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    cache_ttl_s: Annotated[int, Field(ge=1)] = 7 * 24 * 3600
    pin_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    pin_lockout_s: Seconds = 300.0
    token_leeway_s: Annotated[float, Field(ge=0, le=600)] = 30.0


class RecoverySettings(Settings):
    #: At start, an open session found in the store is closed (PowerLoss) or resumed if its
    #: authorization is still valid.
    on_restart: Literal["close", "resume"] = "close"
    #: On SIGTERM/SIGINT, open sessions are ended (Reboot) or kept for the next start.
    on_shutdown: Literal["end", "keep"] = "end"


class SessionSettings(Settings):
    #: How often an open session reports an ``updated`` event (energy so far).
    progress_interval_s: Annotated[float, Field(ge=5, le=3600)] = 60.0


class ClockSettings(Settings):
    #: "kernel": the wall clock counts as synchronised when the kernel says so (adjtimex,
    #: cleared STA_UNSYNC: set by NTP/chrony/timesyncd). "always": trust it (development,
    #: tests, a site with an RTC).
    trust: Literal["kernel", "always"] = "kernel"


#: Seconds within which the same tag or QR code is one presentation (0: off).
DebounceSeconds = Annotated[float, Field(ge=0, le=60)]


class Rdm6300Input(Settings):
    port: Annotated[str, StringConstraints(min_length=1)]
    connector: Annotated[int, Field(ge=1, le=32)] = 1
    baud: Literal[9600] = 9600  # RDM6300 datasheet: fixed 9600 8N1
    #: The reader repeats its frame while a card lies on it: one decision per presentation.
    debounce_s: DebounceSeconds = DEFAULT_DEBOUNCE_S


class HidInput(Settings):
    device: Annotated[str, StringConstraints(min_length=1)]
    kind: Literal["rfid", "keypad", "qr"]
    connector: Annotated[int, Field(ge=1, le=32)] = 1
    #: For "rfid" and "qr" (a scanner rescans the code in view); keypad lines are not
    #: debounced (a PIN typed twice was typed twice).
    debounce_s: DebounceSeconds = DEFAULT_DEBOUNCE_S


class HttpInput(Settings):
    enabled: bool = False
    host: str = "0.0.0.0"  # noqa: S104 -- a LAN endpoint for the site's app; off by default
    port: Annotated[int, Field(ge=1, le=65535)] = 8470


class InputSettings(Settings):
    rdm6300: tuple[Rdm6300Input, ...] = ()
    hid: tuple[HidInput, ...] = ()
    http: HttpInput = HttpInput()


class MqttSettings(Settings):
    """The cloud link (edge sync). Without a ``[mqtt]`` table the agent runs standalone."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    tls: bool = True
    #: The broker username; defaults to the device id (the broker's ACL keys on it).
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    session_expiry_s: Annotated[int, Field(ge=60, le=30 * 24 * 3600)] = 7 * 24 * 3600
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    backlog_msgs_per_s: Annotated[float, Field(gt=0)] = 500.0
    status_interval_s: Annotated[float, Field(ge=1, le=3600)] = 60.0

    @model_validator(mode="after")
    def _plaintext_only_to_loopback(self) -> MqttSettings:
        if not self.tls and not is_loopback(self.host):
            raise ValueError("tls = false is only allowed to a broker on this machine (localhost)")
        if self.cert_file is not None and self.key_file is None:
            raise ValueError("cert_file needs key_file")
        return self


class ControlSettings(Settings):
    socket_path: Path = Path("/run/chargemitra/agent.sock")


class AgentSettings(Settings):
    """The whole configuration of one agent."""

    device_id: str
    meters: tuple[MeterSettings, ...] = Field(min_length=1)
    connectors: tuple[ConnectorSettings, ...] = Field(min_length=1)
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

    def meter(self, meter_id: str) -> MeterSettings:
        return next(m for m in self.meters if m.id == meter_id)

    def connector(self, connector_id: int) -> ConnectorSettings:
        return next(c for c in self.connectors if c.id == connector_id)


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


def _problems_from(exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    errors = exc.errors(include_url=False)
    locs = [err["loc"] for err in errors]
    for err in errors:
        # A list whose items all failed also reports "too short": the item errors say it.
        if err["type"] == "too_short" and any(
            other[: len(err["loc"])] == err["loc"] and other != err["loc"] for other in locs
        ):
            continue
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        value = err.get("input")
        if err["type"] == "missing":
            value = None
        expected = err["msg"]
        # pydantic's "Value error, ..." prefix repeats what the message already says.
        expected = expected.removeprefix("Value error, ")
        problems.append(ConfigProblem(loc or "(top level)", value, expected))
    return problems


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> AgentSettings:
    """Validate a parsed TOML document; raise :class:`ConfigError` with every problem."""
    try:
        settings = AgentSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems_from(exc)) from None
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
