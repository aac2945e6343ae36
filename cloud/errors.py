"""The one exception tree of :mod:`cloud`.

Services raise these; :mod:`cloud.problems` maps them to RFC 9457 problem responses in one
place, so no router builds an error response by hand. Third-party errors are translated at
one boundary per library, with ``raise ... from exc`` (SQLAlchemy in cloud/db_errors.py,
redis-py in cloud/redis_errors.py, the MQTT client's socket, TLS and protocol errors in
cloud/broker.py, each payment SDK in its provider module; the list is ``BOUNDARIES`` in
tests/cloud/test_error_boundaries.py, which fails on a catch elsewhere)::

    CloudError
    ├── ConfigError              a setting is missing or invalid (variable, value)
    ├── NotFound                 an entity does not exist (entity, key)
    ├── Conflict                 the request contradicts stored state (entity, key)
    │   ├── BookingOverlap       an active booking already holds that connector and time
    │   ├── BookingNotActive     the booking named does not cover now (or is not confirmed)
    │   └── ConnectorHeld        pay-as-you-go, but someone's booking holds the connector
    ├── InvalidRequest           well-formed but semantically wrong input (field)
    │   └── PayloadTooLarge      the body or a part of it exceeds its limit (field, max_bytes)
    ├── Unauthorized             no or bad credentials
    ├── Forbidden                authenticated, not allowed
    │   └── KycRequired          a host whose KYC is not verified asked for money out
    │                            (host_id, kyc_status)
    ├── RateLimited              too many attempts (retry_after_s)
    ├── PaymentRequired          nothing paid yet for what is asked (entity, key, amount_paise)
    ├── PairingError             a pairing code cannot be claimed
    │   ├── PairingCodeInvalid   unknown, expired or already claimed (indistinguishable
    │   │                        on purpose: an attacker learns nothing from the answer)
    │   └── DeviceRevoked        the device was revoked
    ├── UnlockRefused            the agent refused a start/stop (agent_status, detail)
    ├── ChargerOffline           the charger's agent is not connected (charger_id)
    ├── ChargerNoAnswer          the agent did not answer a command in time (cmd_id)
    ├── BrokerError              the MQTT broker or its credential store failed, or did
    │   │                        not acknowledge a publish
    │   └── BrokerUnacknowledged a publish was handed to the connection but its PUBACK never
    │                            came (timeout, connection lost): the broker may have it
    ├── DependencyUnavailable    PostgreSQL, Redis or the broker did not answer (dependency)
    ├── DatabaseRefused          PostgreSQL refused a statement: a constraint, a deadlock
    │                            (sqlstate, constraint; cloud/db_errors.py raises it)
    ├── DocumentUnreadable       a stored KYC document does not authenticate: altered bytes
    │                            or another key (the server's fault: a 500 of its own type)
    ├── SignatureInvalid         a payment provider's signature (webhook or Checkout) does
    │                            not verify (provider, what)
    ├── PaymentProviderError     a payment provider refused or failed a call (provider,
    │                            operation, code)
    └── DeliveryFailed           a notification channel did not take a message (channel,
                                 permanent: retrying cannot help)
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error raised by :mod:`cloud`."""


class ConfigError(CloudError):
    def __init__(self, message: str, *, variable: str, value: object) -> None:
        super().__init__(message)
        self.variable = variable
        self.value = value


class NotFound(CloudError):
    def __init__(self, entity: str, key: object) -> None:
        super().__init__(f"{entity} {key!r} not found")
        self.entity = entity
        self.key = key


class Conflict(CloudError):
    def __init__(self, message: str, *, entity: str, key: object = None) -> None:
        super().__init__(message)
        self.entity = entity
        self.key = key


class BookingOverlap(Conflict):
    def __init__(self, connector_id: object) -> None:
        super().__init__(
            "an active booking already holds this connector in that time range",
            entity="booking",
            key=connector_id,
        )


class BookingNotActive(Conflict):
    def __init__(self, booking_id: str, reason: str) -> None:
        super().__init__(f"booking {booking_id!r} {reason}", entity="booking", key=booking_id)


class ConnectorHeld(Conflict):
    def __init__(self, charger_id: str, connector: int) -> None:
        super().__init__(
            f"connector {connector} of charger {charger_id!r} is booked by someone else "
            "now or shortly",
            entity="connector",
            key=f"{charger_id}#{connector}",
        )


class UnlockRefused(CloudError):
    """The charger's agent answered the command with a refusal."""

    def __init__(
        self,
        message: str,
        *,
        command_status: str,
        agent_status: str | None,
        unlock_id: str | None = None,
        cmd_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.command_status = command_status
        self.agent_status = agent_status
        self.unlock_id = unlock_id
        self.cmd_id = cmd_id


class ChargerOffline(CloudError):
    def __init__(self, charger_id: str, *, unlock_id: str | None = None) -> None:
        super().__init__(f"charger {charger_id!r} is offline")
        self.charger_id = charger_id
        self.unlock_id = unlock_id


class ChargerNoAnswer(CloudError):
    """Sent, but no answer within the wait: the command may still run until it expires."""

    def __init__(
        self,
        charger_id: str,
        *,
        cmd_id: str,
        unlock_id: str | None = None,
        pin: str | None = None,
    ) -> None:
        super().__init__(f"charger {charger_id!r} did not answer command {cmd_id} in time")
        self.charger_id = charger_id
        self.cmd_id = cmd_id
        self.unlock_id = unlock_id
        #: A booking PIN for the keypad, when the driver has a booking (the fallback).
        self.pin = pin


class InvalidRequest(CloudError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(InvalidRequest):
    """More bytes than the route accepts (RFC 9110 §15.5.14, 413 Content Too Large)."""

    def __init__(self, message: str, *, field: str | None = None, max_bytes: int) -> None:
        super().__init__(message, field=field)
        self.max_bytes = max_bytes


class PaymentRequired(CloudError):
    """What is asked needs money first: an unlock of an unpaid booking or walk-up, or a
    booking while an amount is due (``amount_paise``: what to pay)."""

    def __init__(self, message: str, *, entity: str, key: object, amount_paise: int) -> None:
        super().__init__(message)
        self.entity = entity
        self.key = key
        self.amount_paise = amount_paise


class Unauthorized(CloudError):
    pass


class Forbidden(CloudError):
    pass


class KycRequired(Forbidden):
    """A payout needs the host's KYC verified first (cloud/kyc/): a 403, not a 409 — the
    host's own standing forbids it, nothing about the payout conflicts."""

    def __init__(self, host_id: str, kyc_status: str) -> None:
        super().__init__(
            f"host {host_id!r} cannot be paid out before their KYC is verified "
            f"(it is {kyc_status}): submit it with POST /host/kyc"
        )
        self.host_id = host_id
        self.kyc_status = kyc_status


class RateLimited(CloudError):
    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PairingError(CloudError):
    pass


class PairingCodeInvalid(PairingError):
    def __init__(self) -> None:
        super().__init__("the pairing code is unknown, expired or already used")


class DeviceRevoked(PairingError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is revoked")
        self.device_id = device_id


class BrokerError(CloudError):
    pass


class BrokerUnacknowledged(BrokerError):
    """The message was written to the connection but no PUBACK came (the wait timed out or
    the connection ended first): the broker may have accepted it and delivered it. A plain
    :class:`BrokerError` from a publish means nothing was handed over, or the broker refused."""


class DependencyUnavailable(CloudError):
    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


class DatabaseRefused(CloudError):
    """PostgreSQL refused a statement with an SQLSTATE (PostgreSQL appendix A): a service
    turns the refusal it expects (a unique or exclusion violation, a deadlock) into its own
    error; any other stays a 500."""

    def __init__(self, sqlstate: str, constraint: str | None, detail: str) -> None:
        super().__init__(f"database refused ({sqlstate}): {detail}")
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.detail = detail

    @property
    def integrity(self) -> bool:
        """A constraint refused the change (SQLSTATE class 23)."""
        return self.sqlstate.startswith("23")


class DocumentUnreadable(CloudError):
    """A stored document failed authentication: wrong key, or altered bytes
    (cloud/kyc/storage.py). Retrying cannot help and the client did nothing wrong: a 500
    whose type names it, so an admin reading a document knows to call an operator."""


class SignatureInvalid(CloudError):
    """A webhook or Checkout answer whose signature does not verify: nothing is changed."""

    def __init__(self, provider: str, what: str) -> None:
        super().__init__(f"{provider} {what} signature does not verify")
        self.provider = provider
        self.what = what


class PaymentProviderError(CloudError):
    """The payment provider refused a call or could not be reached (its own error text is in
    the log, not in the answer: it can name our account)."""

    def __init__(self, provider: str, operation: str, *, code: str = "provider-error") -> None:
        super().__init__(f"{provider} {operation} failed ({code})")
        self.provider = provider
        self.operation = operation
        self.code = code


class DeliveryFailed(CloudError):
    """A notification channel (SMTP relay, SMS gateway, push service) did not take a
    message. ``permanent``: retrying the same message cannot succeed (an address refused,
    a push subscription gone); otherwise the delivery job retries it with backoff."""

    def __init__(
        self, channel: str, reason: str, *, permanent: bool = False, gone: bool = False
    ) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason
        self.permanent = permanent or gone
        #: The address no longer exists (a push subscription the push service dropped).
        self.gone = gone
