"""``/healthz`` (the process answers), ``/readyz`` (its dependencies answer), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from cloud import __version__
from cloud.deps import State
from cloud.errors import DependencyUnavailable
from cloud.health.schemas import Health, Readiness
from cloud.health.service import readiness
from cloud.openapi import problems

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/readyz", responses=problems(503))
async def readyz(state: State) -> Readiness:
    """200 when PostgreSQL, Redis and the broker answer; 503 (``dependency-unavailable``,
    naming the failing ones) when any does not."""
    checks = await readiness(state)
    failing = {name: detail for name, detail in checks.items() if detail != "ok"}
    if failing:
        raise DependencyUnavailable(
            ", ".join(sorted(failing)), "; ".join(f"{k}: {v}" for k, v in failing.items())
        )
    return Readiness(status="ready", checks=checks, telemetry_backend=state.telemetry_backend)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
