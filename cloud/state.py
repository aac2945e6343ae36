"""What the API's lifespan opens and every request may use."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cloud.accounts.principals import PrincipalCache
from cloud.broker import BrokerLink
from cloud.devices.broker_auth import BrokerCredentials
from cloud.devices.service import TokenKey
from cloud.kyc.storage import DocumentStore
from cloud.payments.provider import PaymentProvider
from cloud.payments.webhooks import WebhookBatcher
from cloud.sessions.live import LiveHub, MemoryLiveHub
from cloud.settings import Settings
from cloud.telemetry.storage import TelemetryBackend
from protocols.tokens import PrivateKey


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Charger searches' own pool: one statement per search, planner settings on each
    #: connection (cloud/chargers/search.py ``PLANNER``, cloud/db.py ``open_reader``).
    search_reader: AsyncEngine
    redis: Redis
    broker: BrokerLink
    telemetry_backend: TelemetryBackend
    credentials: BrokerCredentials
    token_key: TokenKey
    #: Signs unlock tokens; None when no private key is configured (unlocks answer 503).
    unlock_signer: PrivateKey | None = None
    #: Live updates fanned out to this process's WebSocket streams and unlock waiters.
    live: LiveHub = field(default_factory=MemoryLiveHub)
    #: Callers' current account state, kept fresh by PostgreSQL notifications; None: read
    #: from the database on every request.
    principals: PrincipalCache | None = None
    #: The payment provider chosen by settings (cloud/payments/factory.py); None only in
    #: states built by hand without one.
    payments: PaymentProvider | None = None
    #: Encrypted KYC documents; None without ``KYC_KEY_FILE`` (KYC uploads answer 503).
    kyc_documents: DocumentStore | None = None
    #: Webhook deliveries applied many per transaction (cloud/payments/webhooks.py); None:
    #: one transaction per delivery.
    webhooks: WebhookBatcher | None = None
