"""Prometheus metrics of the cloud, declared once (the default registry is process-wide)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "chargemitra_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "chargemitra_http_request_seconds", "HTTP request latency", ["method", "route"]
)
INGEST_MESSAGES = Counter(
    "chargemitra_ingest_messages_total", "MQTT messages ingested", ["kind", "outcome"]
)
INGEST_READINGS = Counter("chargemitra_ingest_readings_total", "Telemetry readings stored")
INGEST_BATCH_SECONDS = Histogram(
    "chargemitra_ingest_batch_seconds", "Time to commit one ingest batch"
)
#: Labelled ``task``, not ``job``: Prometheus gives every scraped series its target's ``job``
#: label (the scrape config's job name), so a metric's own ``job`` would be renamed
#: ``exported_job`` (or, with ``honor_labels``, replace the target's) and a dashboard filtering
#: on the process would see the wrong thing. No figure here carries ``job`` or ``instance``.
WORKER_JOB_FAILURES = Counter(
    "chargemitra_worker_job_failures_total",
    "Failures a worker's background job survived (logged, backed off, resumed), by job name",
    ["task"],
)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (``/chargers/{id}``, so ids
    do not explode cardinality). Plain ASGI rather than ``@app.middleware("http")``: that
    wrapper runs every request through extra tasks and memory streams, a cost measured at
    most of a millisecond per request (``bench.payments``; docs/decisions.md)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
