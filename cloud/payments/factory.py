"""Build the configured :class:`~cloud.payments.provider.PaymentProvider` (the API's lifespan
opens it; ``CHARGEMITRA_PAYMENTS_PROVIDER`` chooses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cloud.payments.dummy import DummyProvider, DummySwitches
from cloud.payments.provider import PaymentProvider
from cloud.payments.razorpay_provider import RazorpayProvider
from cloud.payments.stripe_provider import StripeProvider
from cloud.settings import PaymentProviderName, Settings


@asynccontextmanager
async def open_provider(settings: Settings) -> AsyncIterator[PaymentProvider]:
    """The provider named in settings, closed on exit. The dummy refuses production."""
    pay = settings.payments
    if pay.provider is PaymentProviderName.RAZORPAY:
        razorpay = RazorpayProvider(
            key_id=pay.razorpay_key_id,
            key_secret=pay.razorpay_key_secret.get_secret_value(),
            webhook_secret=pay.razorpay_webhook_secret.get_secret_value(),
            base_url=pay.razorpay_base_url,
            timeout_s=pay.timeout_s,
            payout_account_number=pay.razorpayx_account_number,
        )
        try:
            yield razorpay
        finally:
            await razorpay.aclose()
    elif pay.provider is PaymentProviderName.STRIPE:
        stripe = StripeProvider(
            secret_key=pay.stripe_secret_key.get_secret_value(),
            webhook_secret=pay.stripe_webhook_secret.get_secret_value(),
            base_url=pay.stripe_base_url,
            timeout_s=pay.timeout_s,
        )
        try:
            yield stripe
        finally:
            await stripe.aclose()
    else:
        dummy = DummyProvider(
            env=settings.app.env,
            webhook_secret=pay.dummy_webhook_secret.get_secret_value(),
            switches=DummySwitches(
                fail=pay.dummy_fail,
                latency_s=pay.dummy_latency_s,
                duplicate_webhooks=pay.dummy_duplicate_webhooks,
                webhook_delay_s=pay.dummy_webhook_delay_s,
            ),
            upi_vpa=pay.upi_vpa,
        )
        async with dummy:
            yield dummy
