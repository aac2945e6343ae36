"""The one exception tree of :mod:`edge_agent`.

Hardware, storage and configuration failures reach callers only as one of these; third-party
errors are translated at one boundary per library, with ``from`` (pymodbus:
:mod:`edge_agent.meters.bus`; paho-mqtt: :mod:`edge_agent.sync.link`; the OCPP
uplink's sockets and TLS: :mod:`edge_agent.ocpp.websocket`; sqlite3:
:mod:`edge_agent.store`; msgspec: where a message or file is decoded), and
``tests/edge/test_error_boundaries.py`` fails when another module catches one::

    AgentError
    ├── ConfigError           the TOML file is unreadable or invalid (carries every problem)
    ├── StoreError            the SQLite store cannot be opened, migrated or written
    │   └── StaleAuthListVersion  a local-list update whose version does not move forward
    ├── MeterError            a meter did not answer, or answered garbage (carries meter_id)
    │   └── BusError          a Modbus bus failed; ``kind`` a :class:`BusFault` (timeout,
    │                         exception, garbage, disconnected; carries exception_code)
    ├── RelayError            a relay driver could not set or read its output (carries connector)
    ├── LinkError             the MQTT link to the cloud cannot be set up or used
    │   └── OcppLinkError     the OCPP WebSocket to the CSMS cannot be set up or used
    │       ├── OcppFrameError    a message from the CSMS that is not OCPP-J (carries unique_id)
    │       └── OcppCallFailed    the CSMS answered a call with a CALLERROR, or not in time
    │                             (carries action, code)
    ├── InputError            a technician's request that cannot be served (unknown meter id,
    │   │                     bad register range; carries the field)
    │   └── PortBusy          a serial port another process holds (carries port, holder)
    ├── ControlError          the running agent refused a control request, or cannot be reached
    └── Interrupted           a command stopped by Ctrl-C, SIGTERM or SIGHUP, once it had put
                              the hardware back in its safe state (the relay opened)

The field CLI (:mod:`edge_agent.tech`) maps every one of them to exit code 2 and one line on
stderr, at one boundary (:func:`edge_agent.tech.output.boundary`).

Authorization never raises on what a driver presents: every outcome is a decision with an
OCPP-style status (see :mod:`edge_agent.auth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AgentError(Exception):
    """Base of every error raised by :mod:`edge_agent`."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file: where, what was there, what was expected."""

    field: str
    value: object
    expected: str

    def __str__(self) -> str:
        return f"{self.field}: got {self.value!r}, expected {self.expected}"


class ConfigError(AgentError):
    """The configuration file cannot be used; ``problems`` lists every field at fault."""

    def __init__(self, path: str, problems: list[ConfigProblem]) -> None:
        lines = "; ".join(str(p) for p in problems)
        super().__init__(f"{path}: {lines}")
        self.path = path
        self.problems = problems


class StoreError(AgentError):
    """The SQLite store cannot be opened, migrated or written."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StaleAuthListVersion(StoreError):
    """A local authorization list update whose version is not newer than the one held."""

    def __init__(self, offered: int, held: int) -> None:
        super().__init__(f"local list update version {offered} is not newer than {held}")
        self.offered = offered
        self.held = held


class MeterError(AgentError):
    """A meter did not answer in time, answered an exception, or answered garbage."""

    def __init__(self, message: str, *, meter_id: str, address: int | None = None) -> None:
        super().__init__(f"meter {meter_id}: {message}")
        self.meter_id = meter_id
        self.address = address


class BusFault(StrEnum):
    """How a Modbus request failed (the poller counts each kind; ``doctor`` names it)."""

    #: No valid answer in time (a CRC mismatch is dropped by the framer: it counts here too).
    TIMEOUT = "timeout"
    #: The device answered a Modbus exception (``BusError.exception_code``).
    EXCEPTION = "exception"
    #: An answer of the wrong length or type.
    GARBAGE = "garbage"
    #: The port or host cannot be opened (reconnects back off: :mod:`edge_agent.backoff`).
    DISCONNECTED = "disconnected"


class BusError(MeterError):
    """A bus-level failure of one request (``device`` names the bus); ``exception_code`` is
    the Modbus exception the device answered (``kind`` :attr:`BusFault.EXCEPTION`)."""

    def __init__(
        self,
        message: str,
        *,
        kind: BusFault,
        device: str,
        address: int | None = None,
        exception_code: int | None = None,
    ) -> None:
        super().__init__(message, meter_id=device, address=address)
        self.kind = kind
        self.exception_code = exception_code


class RelayError(AgentError):
    """A relay driver could not set or read its output."""

    def __init__(self, message: str, *, connector: int) -> None:
        super().__init__(f"relay of connector {connector}: {message}")
        self.connector = connector


class LinkError(AgentError):
    """The MQTT link to the cloud could not be set up or used (unreachable, refused, TLS).

    Raised by :mod:`edge_agent.sync.link`, the one place paho-mqtt's errors are translated.
    """


class OcppLinkError(LinkError):
    """The OCPP 1.6-J WebSocket to the CSMS could not be opened or broke (refused, TLS, auth,
    closed). Raised by :mod:`edge_agent.ocpp.websocket` and :mod:`edge_agent.ocpp.link`, where
    the socket and TLS errors of the connection are translated."""


class OcppFrameError(OcppLinkError):
    """A text message from the CSMS that is not an OCPP-J frame (:mod:`edge_agent.ocpp.frames`);
    ``unique_id`` when one could be read, so a malformed CALL can still be answered."""

    def __init__(self, message: str, *, unique_id: str | None = None) -> None:
        super().__init__(message)
        self.unique_id = unique_id


class OcppCallFailed(OcppLinkError):
    """A call to the CSMS got a CALLERROR (``code`` its errorCode) or no answer in time
    (``code`` None)."""

    def __init__(self, action: str, code: str | None, description: str = "") -> None:
        what = "no answer in time" if code is None else f"{code}: {description}"
        super().__init__(f"{action}: {what}")
        self.action = action
        self.code = code


class InputError(AgentError):
    """What a technician asked for cannot be served: an unknown meter id, a register range
    outside Modbus limits, a port that does not exist. ``field`` names the option at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PortBusy(InputError):
    """A serial port is held by another process (the running agent, a terminal program)."""

    def __init__(self, port: str, holder: str) -> None:
        super().__init__(f"port {port} is busy: {holder}", field="port")
        self.port = port
        self.holder = holder


class ControlError(AgentError):
    """The running agent refused a control-socket request, or its socket cannot be used."""

    def __init__(self, message: str, *, cmd: str | None = None) -> None:
        super().__init__(message)
        self.cmd = cmd


class Interrupted(AgentError):
    """A field command was stopped by Ctrl-C, SIGTERM or SIGHUP after putting the hardware
    back in its safe state (``relay test``: the relay commanded open)."""
