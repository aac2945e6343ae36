"""Typed, grouped, immutable settings, read once from the environment and passed down.

Every variable is ``CHARGEMITRA_<GROUP>_<FIELD>`` (``CHARGEMITRA_DB_URL``,
``CHARGEMITRA_MQTT_PORT`` …); ``docs/cloud.md`` lists them all. :func:`load_settings`
validates everything at start and raises :class:`~cloud.errors.ConfigError` naming the
variable, the value and what was expected. Outside ``development``, secrets that still hold a
placeholder value are refused, so a copy of the dev config cannot reach production.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cloud.errors import ConfigError
from cloud.invoices.gstin import InvalidGstin, validate_gstin

ENV_PREFIX = "CHARGEMITRA_"

#: Values that mean "nobody set this": refused for secrets outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "changethis", "secret", "chargemitra"}
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AppSettings(_Group):
    env: Environment = Environment.DEVELOPMENT
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    #: Signs sessions and short-lived API tokens.
    secret_key: SecretStr = SecretStr("changeme")
    #: Where the public web/app lives: QR codes encode ``{public_base_url}/c/{code}``.
    public_base_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://[^\s/]+")
    #: Reverse proxies whose ``X-Forwarded-For``/``-Proto`` are believed (comma-separated
    #: addresses or networks, e.g. ``10.0.0.5,10.1.0.0/16``). Empty (the default): none, the
    #: socket's peer is the client (rate limits key on it). Never ``*`` unless only the proxy
    #: can reach the API.
    forwarded_allow_ips: str = Field(default="", pattern=r"^[0-9A-Fa-f:.,/* ]*$")


class DbSettings(_Group):
    url: str = Field(
        default="postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra",
        pattern=r"^postgres(ql)?(\+asyncpg)?://",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    #: Connections to PostgreSQL time out rather than hang a health check or a request.
    connect_timeout_s: float = Field(default=5.0, gt=0)


class RedisSettings(_Group):
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    #: Put before every key the cloud keeps in Redis (rate limits, one-time codes, the SMS
    #: outbox, web sessions), so two deployments, test runs or benchmarks sharing one Redis
    #: never count each other's attempts (issue 20; tests/support/cloud_env.py gives each run
    #: its own). Pub/sub channels carry ids unique to their run and are not prefixed.
    key_prefix: str = Field(default="cm:", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class MqttSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = "cloud-ingest"
    password: SecretStr = SecretStr("changeme")
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    #: The URL handed to devices at provisioning (their view of the broker, usually TLS).
    public_url: str = Field(default="mqtts://broker.chargemitra.local:8883", pattern=r"^mqtts?://")


class IngestSettings(_Group):
    #: Client id prefix; each worker appends its index so its persistent session survives a
    #: restart (the broker keeps unacked QoS 1 messages for it).
    client_id: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    #: Messages held in memory between the MQTT thread and the database writer. Also sent as
    #: MQTT 5 Receive Maximum, so the broker never has more unacknowledged messages in flight
    #: to us than we can hold (DESIGN.md §8: unbounded incoming queues).
    queue_max: int = Field(default=2000, ge=10, le=65535)
    batch_max: int = Field(default=500, ge=1, le=20000)
    flush_interval_s: float = Field(default=0.01, gt=0, le=10)
    #: Seconds the broker keeps this worker's session after a disconnect (MQTT 5 Session
    #: Expiry Interval). 0, the default: a stopped worker leaves the ``$share/ingest`` group at
    #: once, so the broker routes every message to the workers still running instead of
    #: parking a share of all uplink in a session nobody reads (issue 13). Nothing is lost:
    #: agents keep each message until the cloud's application ack and resend it.
    session_expiry_s: int = Field(default=0, ge=0, le=3600)
    #: Dead-lettered payloads are kept only up to this size.
    dead_letter_payload_max: int = Field(default=8192, ge=256, le=262144)
    #: How often a worker recomputes the 15-minute rollup buckets new telemetry went into,
    #: once each has closed (cloud/telemetry/rollup.py).
    rollup_refresh_s: float = Field(default=60.0, ge=1, le=3600)
    #: Raw telemetry is kept this many days on both storage backends, then dropped once the
    #: 15-minute rollup (kept for ever) covers it (cloud/telemetry/partitions.py, issue 21).
    raw_retention_days: int = Field(default=365, ge=7, le=36500)
    #: How often a worker runs telemetry maintenance (partitions ahead, retention).
    maintenance_s: float = Field(default=3600.0, ge=10, le=86400)
    #: How often a worker marks the devices silent past ``marketplace.device_offline_after_s``
    #: offline and queues their hosts' notifications (cloud/devices/silence.py).
    presence_sweep_s: float = Field(default=30.0, ge=1, le=3600)


class ProvisioningSettings(_Group):
    pairing_code_ttl_s: int = Field(default=900, ge=60, le=86400)
    #: Claim attempts allowed per client address per window before 429.
    claim_attempts_per_window: int = Field(default=10, ge=1)
    claim_window_s: int = Field(default=300, ge=1)
    #: The Ed25519 public key (PEM) agents use to verify unlock tokens.
    token_public_key_file: Path = Path("/etc/chargemitra/unlock-token.pub.pem")
    #: Its private half (PKCS#8 PEM), used by the API to sign unlock tokens. Optional: an
    #: API without it can list and book but answers unlock requests with 503.
    token_private_key_file: Path | None = None


class AuthSettings(_Group):
    #: Access tokens (JWT, HS256 with app.secret_key) are short-lived; refresh tokens rotate.
    access_ttl_s: int = Field(default=900, ge=60, le=86400)
    refresh_ttl_s: int = Field(default=30 * 86400, ge=3600)
    #: Login / OTP attempts per identity and per client address before 429.
    login_attempts_per_window: int = Field(default=10, ge=1)
    login_window_s: int = Field(default=300, ge=1)
    otp_ttl_s: int = Field(default=300, ge=30, le=3600)
    otp_max_attempts: int = Field(default=5, ge=1, le=20)
    #: How long an API process may reuse an account's state (token version, disabled,
    #: roles) without reading it again; changes still apply at once, through PostgreSQL
    #: notifications (cloud/accounts/principals.py). 0: read it on every request.
    principal_cache_s: float = Field(default=30.0, ge=0, le=3600)


class MarketplaceSettings(_Group):
    #: Photos live behind a storage interface; in development, files under this directory.
    photo_dir: Path = Path("/var/lib/chargemitra/photos")
    photo_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    #: A booking awaiting host approval lapses after this long.
    approval_ttl_s: int = Field(default=1800, ge=60)
    #: How long ``POST /chargers/{id}/sessions`` waits for the agent's answer.
    unlock_wait_s: float = Field(default=8.0, gt=0, le=60)
    #: Lifetime of a start command (the agent refuses it afterwards) and of the unlock token.
    start_command_ttl_s: int = Field(default=60, ge=5, le=3600)
    #: A device not heard from for this long counts as offline even without its Last Will.
    device_offline_after_s: int = Field(default=180, ge=10)
    #: The search page's map tiles (issue 19): a URL template with ``{z}``, ``{x}``, ``{y}``
    #: (e.g. ``https://tile.openstreetmap.org/{z}/{x}/{y}.png``); its origin is added to the
    #: page's ``img-src``. Empty: the map shows the chargers without a background.
    map_tile_url: str = Field(
        default="", max_length=300, pattern=r"^(https?://[A-Za-z0-9.:-]+/[A-Za-z0-9{}./_-]*)?$"
    )
    #: The credit the tile server asks for, shown under the map.
    map_tile_attribution: str = Field(default="", max_length=200)
    #: Where the search page looks before the driver shares a location (default: Bengaluru).
    search_centre_lat: float = Field(default=12.9716, ge=-90, le=90)
    search_centre_lon: float = Field(default=77.5946, ge=-180, le=180)
    #: Leaflet's ``dist`` directory (installed from npm by deploy/dev/bootstrap.sh), served
    #: under ``/static/vendor/leaflet/``. Missing: the search page is the list alone.
    leaflet_dir: Path = Path(__file__).resolve().parents[1] / ".cache/npm/node_modules/leaflet/dist"


class PaymentProviderName(StrEnum):
    DUMMY = "dummy"
    RAZORPAY = "razorpay"
    STRIPE = "stripe"


class PaymentSettings(_Group):
    """Which payment provider the API uses and its keys (cloud/payments/, docs/cloud.md)."""

    #: ``dummy`` (development, the demo, tests; refused in production), ``razorpay``, ``stripe``.
    provider: PaymentProviderName = PaymentProviderName.DUMMY
    currency: str = Field(default="INR", pattern=r"^[A-Z]{3}$")
    #: Seconds one provider API call may take before it counts as failed.
    timeout_s: float = Field(default=15.0, gt=0, le=120)
    razorpay_key_id: str = Field(default="rzp_test_changeme", pattern=r"^[A-Za-z0-9_]{1,64}$")
    razorpay_key_secret: SecretStr = SecretStr("changeme")
    razorpay_webhook_secret: SecretStr = SecretStr("changeme")
    #: Tests point the SDK at a fake server on loopback.
    razorpay_base_url: str = Field(default="https://api.razorpay.com", pattern=r"^https?://")
    #: The platform's RazorpayX account number host payouts are paid from (RazorpayX
    #: dashboard → My Account); empty: RazorpayX payouts are refused (``not-supported``).
    razorpayx_account_number: str = Field(default="", pattern=r"^([0-9]{9,22})?$")
    stripe_secret_key: SecretStr = SecretStr("sk_test_changeme")
    stripe_webhook_secret: SecretStr = SecretStr("whsec_changeme")
    stripe_base_url: str = Field(default="https://api.stripe.com", pattern=r"^https?://")
    #: Stripe's publishable key (``pk_…``) for the pages' Payment Element (stripe.js);
    #: empty: the pages cannot take a Stripe payment (the API still can).
    stripe_publishable_key: str = Field(default="", pattern=r"^(pk_[A-Za-z0-9_]{1,200})?$")
    #: The payee of the dummy provider's UPI intent links (``upi://pay?pa=...``). Razorpay's
    #: checkout carries no link of ours (cloud/payments/razorpay_provider.py): only the
    #: dummy builds one. The default is nobody's VPA of ours: refused in staging
    #: (:func:`_enforce_own_upi_vpa`).
    upi_vpa: str = Field(default="chargemitra@upi", pattern=r"^[A-Za-z0-9._-]{2,256}@[A-Za-z]+$")
    #: Dummy provider switches (development and tests only): every payment fails; each call
    #: sleeps this long; webhooks are delivered twice; webhooks are delivered this late.
    dummy_fail: bool = False
    dummy_latency_s: float = Field(default=0.0, ge=0, le=30)
    dummy_duplicate_webhooks: bool = False
    dummy_webhook_delay_s: float = Field(default=0.0, ge=0, le=3600)
    dummy_webhook_secret: SecretStr = SecretStr("dummy-webhook-secret")


class BillingSettings(_Group):
    """The platform's rates and the host hold period (cloud/billing/, cloud/ledger/)."""

    #: The platform's commission on a session's taxable value, in basis points (1000 = 10 %).
    commission_bp: int = Field(default=1000, ge=0, le=5000)
    #: The platform as supplier of record of the sessions of hosts without a GSTIN: what its
    #: tax invoices print (cloud/invoices/supply.py). The GSTIN's checksum is checked there.
    supplier_name: str = Field(
        default="ChargeMitra Technologies Private Limited", min_length=1, max_length=200
    )
    supplier_address: str = Field(
        default="4th Floor, 12 MG Road, Pune, Maharashtra 411001", min_length=1, max_length=300
    )
    supplier_gstin: str = Field(
        default="27AAPFU0939F1ZV", pattern=r"^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$"
    )
    #: GST TCS (CGST Act s. 52) withheld from a GST-registered host's earning, in basis points
    #: of the taxable value: 0.5 % since 10 July 2024.
    tcs_bp: int = Field(default=50, ge=0, le=200)
    #: A host's earnings are held this long before they become payable (disputes come early).
    hold_days: int = Field(default=7, ge=0, le=90)
    #: How often the API's settle job looks for stopped sessions to bill (cloud/payments/
    #: settlement.py); 0 turns the job off (a process that must not move money).
    settle_interval_s: float = Field(default=2.0, ge=0, le=3600)
    #: A session whose settlement failed (the provider down) is retried after this, doubled
    #: per failure up to ``settle_backoff_max_s``.
    settle_backoff_s: float = Field(default=5.0, gt=0, le=3600)
    settle_backoff_max_s: float = Field(default=900.0, gt=0, le=86400)
    #: A confirmed booking still unused this long after its end is a no-show: its late
    #: cancellation fee is kept and the rest of its prepayment refunded; a booking whose
    #: sessions are all billed by then gets back what they left unclaimed (an extension's
    #: top-up paid after the stop). cloud/bookings/no_show.py, cloud/payments/settlement.py.
    no_show_after_min: int = Field(default=30, ge=0, le=1440)


class KycSettings(_Group):
    """Host KYC documents (cloud/kyc/): encrypted at rest with AES-256-GCM."""

    #: Where the encrypted documents are stored (development storage, like photos).
    document_dir: Path = Path("/var/lib/chargemitra/kyc")
    #: The 32-byte key sealing them (and the hosts' payout bank account numbers:
    #: cloud/payouts/accounts.py), base64 in this file (``openssl rand -base64 32``).
    #: Without it the API starts, and KYC uploads and document reads answer 503.
    key_file: Path | None = None
    #: The largest document accepted (each of the two).
    document_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)


class SmtpSecurity(StrEnum):
    #: Plain connection upgraded with STARTTLS (submission, port 587).
    STARTTLS = "starttls"
    #: TLS from the first byte (SMTPS, port 465).
    TLS = "tls"
    #: No encryption: a relay on the same host or network, and tests.
    NONE = "none"


class NotificationSettings(_Group):
    """The notification channels and the delivery job (cloud/notifications/, docs/cloud.md)."""

    #: How often the delivery job looks for events to expand and messages due; 0 turns the
    #: job off in this process (``chargemitra-cloud notifications deliver`` runs it alone).
    deliver_interval_s: float = Field(default=2.0, ge=0, le=3600)
    #: Messages sent per round, at most.
    batch: int = Field(default=50, ge=1, le=1000)
    #: A failed message is retried after about ``backoff_s`` * 2^(failures - 1) (equal
    #: jitter), at most ``backoff_max_s``, and given up after ``max_attempts`` tries.
    backoff_s: float = Field(default=30.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=3600.0, gt=0, le=86400)
    max_attempts: int = Field(default=12, ge=1, le=100)
    #: A charger's host hears of it going offline only if it is still offline this long
    #: after (a reboot or a short link drop says nothing).
    offline_grace_s: int = Field(default=300, ge=0, le=86400)
    #: SMTP relay for e-mail; empty: no e-mail channel.
    smtp_host: str = Field(default="", max_length=253, pattern=r"^[A-Za-z0-9.:_-]*$")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    #: Login at the relay; empty: none.
    smtp_user: str = Field(default="", max_length=254)
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = Field(
        default="ChargeMitra <no-reply@chargemitra.in>", min_length=3, max_length=254
    )
    #: Seconds one SMTP conversation (or one push request) may take.
    send_timeout_s: float = Field(default=20.0, gt=0, le=300)
    #: The VAPID private key (PEM, P-256) that signs Web Push requests; unset: no push
    #: channel. Its public half is what browsers subscribe with.
    vapid_private_key_file: Path | None = None
    #: The VAPID ``sub`` claim: how a push service reaches the sender (RFC 8292 section 2.1).
    vapid_subject: str = Field(
        default="mailto:support@chargemitra.in", pattern=r"^(mailto:\S+@\S+|https://\S+)$"
    )
    #: How long a push service keeps a message for an offline browser (``TTL``, RFC 8030).
    push_ttl_s: int = Field(default=86400, ge=0, le=2419200)
    #: Push services a subscription may point at (host names; a leading dot: any subdomain).
    #: The delivery job POSTs to the endpoint a browser gave, so without this list anyone
    #: could make the server send requests to any address.
    push_hosts: str = Field(
        default=(
            "fcm.googleapis.com,updates.push.services.mozilla.com,.notify.windows.com,"
            ".push.apple.com"
        ),
        max_length=2000,
        pattern=r"^[A-Za-z0-9.,:_ -]*$",
    )


class Settings(_Group):
    app: AppSettings = AppSettings()
    db: DbSettings = DbSettings()
    redis: RedisSettings = RedisSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    auth: AuthSettings = AuthSettings()
    marketplace: MarketplaceSettings = MarketplaceSettings()
    payments: PaymentSettings = PaymentSettings()
    billing: BillingSettings = BillingSettings()
    kyc: KycSettings = KycSettings()
    notifications: NotificationSettings = NotificationSettings()


GROUPS: dict[str, type[_Group]] = {
    "app": AppSettings,
    "db": DbSettings,
    "redis": RedisSettings,
    "mqtt": MqttSettings,
    "ingest": IngestSettings,
    "provisioning": ProvisioningSettings,
    "auth": AuthSettings,
    "marketplace": MarketplaceSettings,
    "payments": PaymentSettings,
    "billing": BillingSettings,
    "kyc": KycSettings,
    "notifications": NotificationSettings,
}

#: (group, field) pairs holding secrets: checked against PLACEHOLDER_SECRETS.
SECRET_FIELDS = (("app", "secret_key"), ("mqtt", "password"))

#: The chosen payment provider's keys, checked like SECRET_FIELDS (only the chosen one's: an
#: unused provider's empty defaults are harmless), and also refused when they look like a
#: documentation sample (``rzp_test_xxxxxxxx``, ``sk_test_your_key``).
PROVIDER_SECRET_FIELDS: dict[PaymentProviderName, tuple[str, ...]] = {
    PaymentProviderName.DUMMY: (),
    PaymentProviderName.RAZORPAY: (
        "razorpay_key_id",
        "razorpay_key_secret",
        "razorpay_webhook_secret",
    ),
    PaymentProviderName.STRIPE: ("stripe_secret_key", "stripe_webhook_secret"),
}
#: Fragments that only a sample or placeholder key holds.
_PLACEHOLDER_MARKS = (
    "xxxxxx",
    "changeme",
    "change-me",
    "changethis",
    "your_",
    "your-",
    "placeholder",
    "...",
)
#: Prefixes a real key carries before its random part (rzp_live_, sk_test_, whsec_ …).
_KEY_PREFIX = re.compile(r"^(rzp_(test|live)_|sk_(test|live)_|rk_(test|live)_|whsec_)")


def env_name(group: str, field: str) -> str:
    """The environment variable that sets ``group.field``."""
    return f"{ENV_PREFIX}{group}_{field}".upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``), validated once."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    for group, model in GROUPS.items():
        values = {
            field: env[env_name(group, field)]
            for field in model.model_fields
            if env_name(group, field) in env
        }
        try:
            model.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = env_name(group, field)
            raise ConfigError(
                f"{name}={env.get(name)!r}: {err['msg']}", variable=name, value=env.get(name)
            ) from None
        raw[group] = values
    settings = Settings.model_validate(raw)
    _enforce_non_default_secrets(settings)
    _enforce_real_supplier(settings)
    _enforce_own_upi_vpa(settings)
    return settings


def looks_like_placeholder(value: str) -> bool:
    """Whether ``value`` is a stand-in, not a key: empty, a known placeholder, or a key
    prefix followed by a sample (``rzp_test_xxxxxxxxxxxx``, ``sk_test_changeme``)."""
    text = value.strip().lower()
    rest = _KEY_PREFIX.sub("", text)
    return (
        text in PLACEHOLDER_SECRETS
        or rest in PLACEHOLDER_SECRETS
        or any(mark in text for mark in _PLACEHOLDER_MARKS)
    )


def _enforce_non_default_secrets(settings: Settings) -> None:
    if settings.app.env is Environment.DEVELOPMENT:
        return
    provider = settings.payments.provider
    checked = [*SECRET_FIELDS, *(("payments", f) for f in PROVIDER_SECRET_FIELDS[provider])]
    for group, field in checked:
        secret: SecretStr | str = getattr(getattr(settings, group), field)
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        placeholder = (
            looks_like_placeholder(value)
            if group == "payments"
            else value.strip().lower() in PLACEHOLDER_SECRETS
        )
        if placeholder:
            name = env_name(group, field)
            raise ConfigError(
                f"{name} holds a placeholder value; set a real secret outside development "
                f"(env is {settings.app.env.value!r})",
                variable=name,
                value="<placeholder>",
            )


def _enforce_own_upi_vpa(settings: Settings) -> None:
    """Where a real UPI app may scan the dummy's QR code (staging: production refuses the
    dummy), its payee must be a VPA of ours: the default ``chargemitra@upi`` is nobody's we
    know, and money sent to it from a test checkout would go to a stranger. Development and
    test keep the default (no real phone pays there); production refuses the dummy itself
    (cloud/payments/dummy.py); Razorpay and Stripe build no link."""
    if settings.app.env is not Environment.STAGING:
        return
    if settings.payments.provider is not PaymentProviderName.DUMMY:
        return
    default = PaymentSettings.model_fields["upi_vpa"].default
    if settings.payments.upi_vpa == default:
        name = env_name("payments", "upi_vpa")
        raise ConfigError(
            f"{name} is the sample {default!r}; set the VPA of the merchant account outside "
            f"development (env is {settings.app.env.value!r})",
            variable=name,
            value=default,
        )


#: GSTINs that are examples, not registrations: the default (a documentation sample, so that
#: development can issue invoices) and the samples tutorials print. Invoicing as one of
#: them in production would put another business's, or nobody's, GSTIN on tax invoices.
SAMPLE_GSTINS = frozenset(
    {
        str(BillingSettings.model_fields["supplier_gstin"].default),
        "22AAAAA0000A1Z5",
        "29ABCDE1234F1Z5",
    }
)


def _enforce_real_supplier(settings: Settings) -> None:
    """In production the platform's GSTIN must be a real one: not a sample, and with a
    valid check character (checked at start, not at the first invoice)."""
    if settings.app.env is not Environment.PRODUCTION:
        return
    name = env_name("billing", "supplier_gstin")
    gstin = settings.billing.supplier_gstin
    if gstin in SAMPLE_GSTINS:
        raise ConfigError(
            f"{name}={gstin!r} is a sample GSTIN; set the platform's own GSTIN in production",
            variable=name,
            value=gstin,
        )
    try:
        validate_gstin(gstin)
    except InvalidGstin as exc:
        raise ConfigError(f"{name}={gstin!r}: {exc}", variable=name, value=gstin) from None


def asyncpg_dsn(url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg wants (SQLAlchemy's URL carries ``+asyncpg``)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1).replace(
        "postgres+asyncpg://", "postgresql://", 1
    )


def sqlalchemy_url(url: str) -> str:
    """The ``postgresql+asyncpg://`` URL SQLAlchemy's async engine wants."""
    return "postgresql+asyncpg://" + asyncpg_dsn(url).split("://", 1)[1]
