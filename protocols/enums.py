"""Enumerations with their wire values.

The string value of each member is what travels in JSON; never rename a value, add a member.
Names follow OCPP 1.6 / 2.0.1 where OCPP has the concept, so an operator who knows OCPP reads
our logs without a glossary.
"""

from __future__ import annotations

from enum import StrEnum


class MessageKind(StrEnum):
    """The last level of an MQTT topic ``cm/v1/d/{device_id}/{kind}``."""

    TELEMETRY = "telemetry"
    SESSION = "session"
    STATUS = "status"
    CMD = "cmd"
    CMD_RESULT = "cmd_result"
    ACK = "ack"
    #: Every authorization decision the agent made (the audit trail of who tried what).
    AUTH = "auth"


class AuthorizationStatus(StrEnum):
    """The outcome of one authorization decision (OCPP ``AuthorizationStatus`` and ours)."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"
    #: A token signed for another charger or connector (OCPP 2.0.1 has NotAtThisLocation).
    NOT_AT_THIS_CHARGER = "NotAtThisCharger"
    #: A token or PIN whose validity window has not started yet (OCPP 2.0.1 NotAtThisTime).
    NOT_AT_THIS_TIME = "NotAtThisTime"
    #: A single-use token whose ``jti`` was already used.
    REPLAYED = "Replayed"
    #: An id tag found neither in the local list nor in the cache.
    UNKNOWN = "Unknown"
    #: The decision needs a synchronised clock (tokens, PINs) and the clock is not synced.
    CLOCK_UNSYNCED = "ClockUnsynced"


class StopReason(StrEnum):
    """Why a charging session ended (OCPP 1.6 ``Reason`` plus limits)."""

    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    ENERGY_LIMIT_REACHED = "EnergyLimitReached"
    TIME_LIMIT_REACHED = "TimeLimitReached"
    DE_AUTHORIZED = "DeAuthorized"
    METER_FAILURE = "MeterFailure"
    OVER_CURRENT = "OverCurrent"
    STUCK_RELAY = "StuckRelay"
    OTHER = "Other"


class ConnectorStatus(StrEnum):
    """Connector states of the session state machine (OCPP 1.6 ``ChargePointStatus``)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    FINISHING = "Finishing"
    FAULTED = "Faulted"
    UNAVAILABLE = "Unavailable"


class ConnectorType(StrEnum):
    """Connector types found on chargers in India."""

    TYPE_2 = "Type2"
    CCS2 = "CCS2"
    CHADEMO = "CHAdeMO"
    GBT = "GB/T"
    BHARAT_AC_001 = "BharatAC001"
    BHARAT_DC_001 = "BharatDC001"
    #: IS 1293 3-pin 16 A domestic socket, used with portable EVSEs (2-wheelers, small cars).
    SOCKET_16A = "Socket3Pin16A"


class CredentialKind(StrEnum):
    """How a driver identified themselves at the charger."""

    ID_TAG = "IdTag"
    TOKEN = "Token"  # noqa: S105 -- a credential kind, not a password
    PIN = "Pin"
    REMOTE = "Remote"


class SessionEventType(StrEnum):
    """The three events of a charging session on the wire."""

    STARTED = "started"
    UPDATED = "updated"
    STOPPED = "stopped"


class CommandName(StrEnum):
    """Commands the cloud may send to a device."""

    START_SESSION = "start_session"
    STOP_SESSION = "stop_session"
    AUTH_LIST_UPDATE = "auth_list_update"
    CONFIG_UPDATE = "config_update"
    DIAGNOSTICS = "diagnostics"
    RELAY_TEST = "relay_test"
    #: Booking PINs the cloud revoked (a cancelled or declined booking), by ``pin_ref``.
    REVOKE_PINS = "revoke_pins"
    #: A running session's booking was extended: its authorization runs until ``until``.
    EXTEND_SESSION = "extend_session"


class CommandStatus(StrEnum):
    """The device's answer to a command."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    #: The command arrived after its ``expires_at``; it was not executed.
    EXPIRED = "Expired"
    FAILED = "Failed"
    NOT_SUPPORTED = "NotSupported"


class AuthListUpdateType(StrEnum):
    """OCPP ``UpdateType``: replace the whole local list, or apply a difference."""

    FULL = "Full"
    DIFFERENTIAL = "Differential"
