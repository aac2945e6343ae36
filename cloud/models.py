"""Every table of the platform, imported in one place for Alembic and tests."""

from __future__ import annotations

from cloud.accounts.models import Host, RefreshToken, User, UserRole
from cloud.audit.models import AuditEntry
from cloud.bookings.models import Booking
from cloud.chargers.models import (
    AvailabilityWindow,
    BlockedPeriod,
    Charger,
    ChargerPhoto,
    Connector,
)
from cloud.db import Base
from cloud.devices.models import Device, DeviceCommand, DownlinkSequence, PairingCode
from cloud.disputes.models import Dispute, DisputePhoto
from cloud.ingest.models import AuthDecisionRecord, DeadLetter
from cloud.invoices.models import Invoice, InvoiceCounter
from cloud.kyc.models import KycDocument, KycSubmission
from cloud.notifications.models import (
    NotificationDelivery,
    NotificationEvent,
    NotificationPreference,
    PushSubscription,
)
from cloud.payments.models import LedgerEntry, Payment, Payout, ProviderEvent, Refund
from cloud.reviews.models import DriverRating, Review
from cloud.sessions.models import ChargingSession, SessionEventRow, UnlockRequest
from cloud.telemetry.models import telemetry, telemetry_batches, telemetry_rollup_pending

metadata = Base.metadata

__all__ = [
    "AuditEntry",
    "AuthDecisionRecord",
    "AvailabilityWindow",
    "BlockedPeriod",
    "Booking",
    "Charger",
    "ChargerPhoto",
    "ChargingSession",
    "Connector",
    "DeadLetter",
    "Device",
    "DeviceCommand",
    "Dispute",
    "DisputePhoto",
    "DownlinkSequence",
    "DriverRating",
    "Host",
    "Invoice",
    "InvoiceCounter",
    "KycDocument",
    "KycSubmission",
    "LedgerEntry",
    "NotificationDelivery",
    "NotificationEvent",
    "NotificationPreference",
    "PairingCode",
    "Payment",
    "Payout",
    "ProviderEvent",
    "PushSubscription",
    "RefreshToken",
    "Refund",
    "Review",
    "SessionEventRow",
    "UnlockRequest",
    "User",
    "UserRole",
    "metadata",
    "telemetry",
    "telemetry_batches",
    "telemetry_rollup_pending",
]
