"""The charge point's OCPP configuration keys (OCPP 1.6 §9): every required Core key, the
LocalAuthListManagement keys, and the security whitepaper's AuthorizationKey/SecurityProfile.

A key is read-only where the agent's behaviour is fixed by its design (it always authorizes
offline from its local list and cache; a dumb contactor has no cable sensor, so there is no
"EV side disconnect"); read-write keys change what the uplink does, and a change is kept in
the store (``kv`` row ``ocpp_config``), so it survives restarts. ``AuthorizationKey`` is
write-only (whitepaper §3.1.3: never reported by GetConfiguration).

The values are pure data here; :class:`KeyStore` reads and writes them through the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from edge_agent.config import OcppSettings
from edge_agent.store.db import get_state, set_state, transaction, translated

#: The store's ``kv`` rows: the changed keys (JSON object), and the changed AuthorizationKey.
CONFIG_KV = "ocpp_config"
AUTHORIZATION_KEY_KV = "ocpp_authorization_key"
AUTHORIZATION_KEY = "AuthorizationKey"
#: Measurands the agent can report: what its sessions hold (the import register, the power).
ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
MEASURANDS = (ENERGY, POWER)
#: The local list's and SendLocalList's bound (protocols.messages.AuthListUpdate).
LOCAL_LIST_MAX = 2000
GET_CONFIGURATION_MAX_KEYS = 50
#: OCPP 1.6 §9: a configuration value is at most 500 characters.
MAX_VALUE_CHARS = 500


class Change(StrEnum):
    """ChangeConfiguration.conf ``status``."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


def _int(low: int, high: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not value.isdigit() or not low <= int(value) <= high:
            return None
        return str(int(value))

    return check


def _measurands(value: str) -> str | None:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if any(v not in MEASURANDS for v in items):
        return None
    return ",".join(items)


def _free_text(value: str) -> str | None:
    return value if len(value) <= MAX_VALUE_CHARS else None


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    #: The value (as OCPP carries it, a string) before any change.
    default: str
    #: None: read-only. Else the value normalised, or None when the value is refused.
    check: Callable[[str], str | None] | None = None
    #: Whether a change takes effect only when the link reconnects.
    reconnect: bool = False


def core_keys(settings: OcppSettings, *, connectors: int) -> tuple[Key, ...]:
    """Every key this charge point holds, in the order GetConfiguration lists them."""
    return (
        Key("AllowOfflineTxForUnknownId", "false"),
        Key("AuthorizationCacheEnabled", "true"),
        Key("AuthorizeRemoteTxRequests", "true"),
        Key("ClockAlignedDataInterval", "0"),
        Key("ConnectionTimeOut", "0"),
        Key("ConnectorPhaseRotation", "Unknown", _free_text),
        Key("GetConfigurationMaxKeys", str(GET_CONFIGURATION_MAX_KEYS)),
        Key("HeartbeatInterval", str(settings.heartbeat_interval_s), _int(0, 86400)),
        Key("LocalAuthorizeOffline", "true"),
        Key("LocalPreAuthorize", "true"),
        Key("MeterValuesAlignedData", ""),
        Key("MeterValuesSampledData", ",".join(MEASURANDS), _measurands),
        Key(
            "MeterValueSampleInterval", str(settings.meter_value_sample_interval_s), _int(0, 86400)
        ),
        Key("NumberOfConnectors", str(connectors)),
        Key("ResetRetries", "0"),
        Key("StopTransactionOnEVSideDisconnect", "true"),
        Key("StopTransactionOnInvalidId", "true"),
        Key("StopTxnAlignedData", ""),
        Key("StopTxnSampledData", ""),
        Key("SupportedFeatureProfiles", "Core,LocalAuthListManagement,RemoteTrigger"),
        Key("TransactionMessageAttempts", str(settings.transaction_message_attempts), _int(1, 100)),
        Key(
            "TransactionMessageRetryInterval",
            str(settings.transaction_message_retry_interval_s),
            _int(0, 86400),
        ),
        Key("UnlockConnectorOnEVSideDisconnect", "false"),
        Key("WebSocketPingInterval", "60", _int(0, 3600), reconnect=True),
        Key("LocalAuthListEnabled", "true"),
        Key("LocalAuthListMaxLength", str(LOCAL_LIST_MAX)),
        Key("SendLocalListMaxLength", str(LOCAL_LIST_MAX)),
        Key("SecurityProfile", str(settings.security_profile)),
    )


def check_authorization_key(value: str) -> bool:
    """Security whitepaper §3.1.3: 16-40 printable ASCII characters (a Basic auth password)."""
    return 16 <= len(value) <= 40 and all("!" <= ch <= "~" for ch in value)


class KeyStore:
    """The configuration keys' values now: defaults, with the CSMS's changes from the store."""

    def __init__(
        self, conn: sqlite3.Connection, keys: tuple[Key, ...], *, initial_key: str | None
    ) -> None:
        self._conn = conn
        self._keys = {k.name: k for k in keys}
        self._order = [k.name for k in keys]
        with translated("OCPP configuration not read"):
            stored = get_state(conn, CONFIG_KV)
            self._key = get_state(conn, AUTHORIZATION_KEY_KV) or initial_key
        changed: Mapping[str, str] = json.loads(stored) if stored else {}
        self._values = {k.name: changed.get(k.name, k.default) for k in keys}

    @property
    def names(self) -> list[str]:
        return list(self._order)

    def value(self, name: str) -> str | None:
        return self._values.get(name)

    def int_value(self, name: str) -> int:
        return int(self._values[name])

    def readonly(self, name: str) -> bool:
        return self._keys[name].check is None

    @property
    def authorization_key(self) -> str | None:
        return self._key

    def change(self, name: str, value: str) -> tuple[Change, bool]:
        """Apply a ChangeConfiguration: its status, and whether the link must reconnect."""
        if name == AUTHORIZATION_KEY:
            if not check_authorization_key(value):
                return Change.REJECTED, False
            with translated("AuthorizationKey not stored"), transaction(self._conn):
                set_state(self._conn, AUTHORIZATION_KEY_KV, value)
            self._key = value
            # Whitepaper §3.1.3: the charge point reconnects with the new key.
            return Change.ACCEPTED, True
        key = self._keys.get(name)
        if key is None:
            return Change.NOT_SUPPORTED, False
        if key.check is None:
            return Change.REJECTED, False
        normalised = key.check(value)
        if normalised is None:
            return Change.REJECTED, False
        self._values[name] = normalised
        changed = {n: v for n, v in self._values.items() if v != self._keys[n].default}
        with translated("OCPP configuration not stored"), transaction(self._conn):
            set_state(self._conn, CONFIG_KV, json.dumps(changed, sort_keys=True))
        return Change.ACCEPTED, key.reconnect
