"""The API's composition root: :func:`create_app` builds the FastAPI app; its lifespan opens
the engine, Redis and the broker link, in that order, and closes them in reverse."""

from __future__ import annotations

import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis

from cloud import __version__
from cloud.accounts.principals import PrincipalCache
from cloud.accounts.router import router as accounts_router
from cloud.admin.router import router as admin_router
from cloud.audit.router import router as audit_router
from cloud.billing.router import router as billing_router
from cloud.bookings.router import router as bookings_router
from cloud.broker import BrokerLogin, open_broker_link
from cloud.chargers import search
from cloud.chargers.router import router as chargers_router
from cloud.db import open_engine, open_reader, session_factory
from cloud.devices.broker_auth import DynsecCredentials
from cloud.devices.router import router as devices_router
from cloud.devices.service import load_token_key, load_unlock_signer
from cloud.disputes.router import router as disputes_router
from cloud.health.router import router as health_router
from cloud.invoices.router import router as invoices_router
from cloud.kyc.router import router as kyc_router
from cloud.kyc.storage import DocumentStore, load_key
from cloud.metrics import MetricsMiddleware
from cloud.notifications.delivery import running_notifier
from cloud.notifications.router import router as notifications_router
from cloud.openapi import install_openapi
from cloud.payments.dummy import DummyProvider
from cloud.payments.factory import open_provider
from cloud.payments.router import receive_webhook, webhook_router
from cloud.payments.router import router as payments_router
from cloud.payments.settlement import running_settler
from cloud.payments.webhooks import WebhookBatcher
from cloud.payouts.router import router as payouts_router
from cloud.problems import install_problem_handlers
from cloud.requestid import install_request_id
from cloud.reviews.router import router as reviews_router
from cloud.sessions.live import RedisLiveHub
from cloud.sessions.republish import running_republisher
from cloud.sessions.router import router as sessions_router
from cloud.sessions.router import ws_router as sessions_ws_router
from cloud.settings import Settings
from cloud.state import AppState
from cloud.telemetry.storage import detect_backend
from cloud.web.admin import router as admin_pages
from cloud.web.driver import router as driver_pages
from cloud.web.host import router as host_pages
from cloud.web.host_calendar import router as host_calendar_page
from cloud.web.host_kyc import router as host_kyc_page
from cloud.web.host_photos import router as host_photos_page
from cloud.web.host_reviews import router as host_reviews_page
from cloud.web.render import STATIC_DIR
from cloud.web.router import router as web_router
from cloud.web.search import router as search_pages
from cloud.web.security import SecurityHeaders

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_state(
    settings: Settings, *, client_id: str | None = None
) -> AsyncIterator[AppState]:
    """Open every resource the API needs; close them all on exit, even after a failure."""
    token_key = load_token_key(settings.provisioning.token_public_key_file)
    unlock_signer = load_unlock_signer(settings.provisioning.token_private_key_file, token_key)
    kyc_key = settings.kyc.key_file
    kyc_documents = (
        None if kyc_key is None else DocumentStore(settings.kyc.document_dir, load_key(kyc_key))
    )
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(open_engine(settings.db))
        search_reader = await stack.enter_async_context(
            # Named, so pg_stat_activity tells the searches' backends from the rest.
            open_reader(settings.db, server_settings=search.SEARCH_CONNECTION)
        )
        async with engine.connect() as conn:
            backend = await detect_backend(conn)
        log.info("telemetry storage", extra={"telemetry_backend": backend.value})
        redis = Redis.from_url(settings.redis.url)
        stack.push_async_callback(redis.aclose)
        # One client id per process: two API instances sharing an id would keep kicking each
        # other off the broker.
        client_id = client_id or f"api-{socket.gethostname()}-{os.getpid()}"
        broker = await stack.enter_async_context(open_broker_link(settings.mqtt, client_id))
        live = await stack.enter_async_context(RedisLiveHub(redis))
        principals = await stack.enter_async_context(
            PrincipalCache(settings.db, ttl_s=settings.auth.principal_cache_s)
        )
        sessions = session_factory(engine)
        # Its batches are tasks it owns: on exit they are cancelled and awaited after the
        # dummy provider's deliveries (which wait on them) and before the engine is disposed.
        webhooks = await stack.enter_async_context(WebhookBatcher(sessions))
        # After the engine (the dummy's webhooks write through it), so it closes before it.
        payments = await stack.enter_async_context(open_provider(settings))
        state = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            search_reader=search_reader,
            redis=redis,
            broker=broker,
            telemetry_backend=backend,
            # Device credentials are managed as the API's own broker identity (cloud-api).
            credentials=DynsecCredentials(BrokerLogin.from_settings(settings.mqtt)),
            token_key=token_key,
            unlock_signer=unlock_signer,
            live=live,
            principals=principals,
            payments=payments,
            kyc_documents=kyc_documents,
            webhooks=webhooks,
        )
        if isinstance(payments, DummyProvider):
            # The dummy's webhooks take the real route's path: verified, stored, applied.
            payments.deliver_to(
                lambda body, headers: receive_webhook(state, payments.name, body, headers)
            )
        # Last in, first out: the settle job stops before the provider and the engine close.
        await stack.enter_async_context(running_settler(state))
        # Beside it, the notification delivery job (it sends nothing inside a request).
        await stack.enter_async_context(running_notifier(state))
        # And the republisher of deferred commands a request recorded but never sent.
        await stack.enter_async_context(running_republisher(state))
        yield state


def create_app(
    settings: Settings, *, client_id: str | None = None, freeze_gc: bool = False
) -> FastAPI:
    """The API application for ``settings`` (nothing is opened until the lifespan starts).
    ``client_id``: its MQTT client id, by default one per process (:func:`open_state`); a
    test running two instances in one process names the second. ``freeze_gc``: only for a
    process that is this one app (``chargemitra-cloud serve``), see the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_state(settings, client_id=client_id) as state:
            app.state.cloud = state
            # Everything built so far (routes, schemas, modules, the pools) lives as long as
            # the process: frozen out of the collector, a full collection no longer walks it.
            # Unfrozen, each walked the whole heap — a ~95 ms pause of every request every few
            # hundred requests (bench.payments webhook_p99_ms; docs/decisions.md). No collect
            # first: it costs that pause at every start (a test run starts hundreds of apps),
            # and start-up garbage held until the unfreeze is a few cycles of import debris.
            # A process-wide choice, so only the process that is this app makes it: a test
            # run makes hundreds of apps in one process, and freezing there held each test's
            # garbage (an unclosed socket) until a later test's collection finalized it — a
            # ResourceWarning failing an unrelated test.
            if freeze_gc:
                gc.freeze()
            try:
                yield
            finally:
                if freeze_gc:
                    gc.unfreeze()

    app = FastAPI(title="ChargeMitra", version=__version__, lifespan=lifespan)
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(health_router)
    # Matched before the rest: a provider's burst of deliveries (cloud/payments/router.py).
    app.include_router(webhook_router)
    app.include_router(devices_router)
    app.include_router(accounts_router)
    app.include_router(chargers_router)
    app.include_router(bookings_router)
    app.include_router(billing_router)
    app.include_router(invoices_router)
    app.include_router(sessions_router)
    app.include_router(sessions_ws_router)
    app.include_router(payments_router)
    app.include_router(payouts_router)
    app.include_router(audit_router)
    app.include_router(kyc_router)
    app.include_router(notifications_router)
    app.include_router(reviews_router)
    app.include_router(disputes_router)
    app.include_router(admin_router)
    # The pages (issue 19): HTML for people, beside the JSON API; their files under /static.
    app.include_router(web_router)
    app.include_router(host_pages)
    app.include_router(driver_pages)
    app.include_router(search_pages)
    if settings.marketplace.leaflet_dir.is_dir():
        # Leaflet from npm (deploy/dev/bootstrap.sh), before /static so its prefix wins.
        leaflet = StaticFiles(directory=settings.marketplace.leaflet_dir)
        app.mount("/static/vendor/leaflet", leaflet, name="leaflet")
    app.include_router(host_calendar_page)
    app.include_router(host_kyc_page)
    app.include_router(host_photos_page)
    app.include_router(host_reviews_page)
    app.include_router(admin_pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders, settings=settings)

    app.add_middleware(MetricsMiddleware)

    # Added last, so it runs first: every later layer (and the audit log) sees the id.
    install_request_id(app)
    return app
