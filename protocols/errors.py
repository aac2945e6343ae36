"""The one exception tree of :mod:`protocols`.

Everything that crosses a wire is refused through one of these, so a caller can catch
``ProtocolError`` at its boundary and turn it into a dead-letter row, an HTTP problem or a
log line without knowing which check failed::

    ProtocolError
    ├── TopicError              bad MQTT topic or device id
    ├── MessageError            a payload that is not a valid message
    │   ├── PayloadTooLarge     more than MAX_PAYLOAD_BYTES
    │   ├── MalformedJSON       not UTF-8 JSON, or not a JSON object
    │   ├── UnsupportedVersion  ``v`` missing or not one we speak
    │   └── InvalidMessage      right shape of JSON, wrong fields or types
    ├── RegisterMapError        a meter register map (data file) is inconsistent
    ├── DecodeError             raw Modbus registers that cannot be decoded
    ├── CredentialError         a malformed id tag, PIN format or signing key
    └── MqttPacketError         bytes on an MQTT connection that are not MQTT 5 as we speak it

Each error carries the fields that identify what failed (``topic``, ``field``, ``model``,
``address`` …) as attributes, not only in its text.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocols`."""


class TopicError(ProtocolError):
    """An MQTT topic or a device id that does not follow ``cm/v1/d/{device_id}/{kind}``."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic


class MessageError(ProtocolError):
    """A payload that is not a valid message of the kind its topic promises."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class PayloadTooLarge(MessageError):
    """The payload is larger than :data:`protocols.messages.MAX_PAYLOAD_BYTES`."""

    def __init__(self, size: int, limit: int, *, kind: str | None = None) -> None:
        super().__init__(f"payload is {size} bytes, the limit is {limit} bytes", kind=kind)
        self.size = size
        self.limit = limit


class MalformedJSON(MessageError):
    """The payload is not UTF-8 encoded JSON, or its top level is not an object."""


class UnsupportedVersion(MessageError):
    """The payload's ``v`` field is missing or names a schema version we do not speak."""

    def __init__(self, message: str, *, version: object, kind: str | None = None) -> None:
        super().__init__(message, kind=kind)
        self.version = version


class InvalidMessage(MessageError):
    """JSON of the right version whose fields are missing, extra or of the wrong type."""

    def __init__(self, message: str, *, kind: str | None = None, fields: tuple[str, ...] = ()):
        super().__init__(message, kind=kind)
        self.fields = fields


class RegisterMapError(ProtocolError):
    """A register map data file that is inconsistent (overlaps, bad type, unknown quantity)."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class DecodeError(ProtocolError):
    """Raw registers that cannot be decoded with the map (wrong count, missing block)."""

    def __init__(self, message: str, *, model: str | None = None, address: int | None = None):
        super().__init__(message)
        self.model = model
        self.address = address


class CredentialError(ProtocolError):
    """A malformed id tag, an unusable key or an impossible PIN window, where the caller
    (configuration, the cloud issuing a credential) must be told.

    Verifying what a driver presents never raises: signature, expiry and binding failures and
    unparseable tokens are *decisions*, returned as an
    :class:`~protocols.enums.AuthorizationStatus` — a charger answers every credential.
    """


class MqttPacketError(ProtocolError):
    """Bytes on an MQTT connection that are not an MQTT 5 packet this project speaks
    (:mod:`protocols.mqtt5`): a malformed length or property, QoS 2, a topic alias."""
