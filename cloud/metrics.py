"""Prometheus metrics of the cloud, declared once (the default registry is process-wide)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
WORKER_JOB_FAILURES = Counter(
    "chargemitra_worker_job_failures_total",
    "Failures a worker's background job survived (logged, backed off, resumed)",
    ["job"],
)
