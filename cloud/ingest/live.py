"""Live updates ingest publishes to Redis after a commit; API instances fan them out.

Channels: ``cm:live:device:{device_id}`` (latest reading per meter, status, authorization
decisions — a refused unlock is news to the driver waiting at the charger),
``cm:live:session:{session_id}`` and ``cm:live:charger:{charger_id}`` (session row),
``cm:live:cmd:{cmd_id}`` (a command's result: the API waiting on an unlock hears it here).
Live values are best effort: Redis being down never stops or slows ingest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from cloud.errors import DependencyUnavailable
from cloud.ingest.plan import BatchPlan
from cloud.redis_errors import redis_unavailable
from cloud.sessions.fold import SessionRow
from protocols.messages import MeterReading, to_builtins, to_json

log = logging.getLogger(__name__)


def device_channel(device_id: str) -> str:
    return f"cm:live:device:{device_id}"


def session_channel(session_id: str) -> str:
    return f"cm:live:session:{session_id}"


def charger_channel(charger_id: str) -> str:
    return f"cm:live:charger:{charger_id}"


def cmd_channel(cmd_id: str) -> str:
    return f"cm:live:cmd:{cmd_id}"


def live_messages(
    plan: BatchPlan, sessions: list[tuple[SessionRow, str | None]]
) -> list[tuple[str, str]]:
    """(channel, JSON) pairs for one committed batch (pure)."""
    out: list[tuple[str, str]] = []
    latest: dict[tuple[str, str], MeterReading] = {}
    for batch in plan.telemetry.values():
        # Per batch by meter first (no key tuple per reading: this runs for every reading).
        newest: dict[str, MeterReading] = {}
        for reading in batch.readings:
            seen = newest.get(reading.meter_id)
            if seen is None or reading.ts >= seen.ts:
                newest[reading.meter_id] = reading
        for meter_id, reading in newest.items():
            key = (batch.device_id, meter_id)
            seen = latest.get(key)
            if seen is None or reading.ts >= seen.ts:
                latest[key] = reading
    for (device_id, meter_id), reading in sorted(latest.items()):
        body: dict[str, Any] = {"type": "reading", "device_id": device_id, "meter_id": meter_id}
        body |= to_builtins(reading)
        out.append((device_channel(device_id), json.dumps(body)))
    for device_id, steps in sorted(plan.statuses.items()):
        for status in steps:  # in arrival order: the last is where the device is now
            out.append(
                (
                    device_channel(device_id),
                    json.dumps({"type": "status"} | to_builtins(status)),
                )
            )
    for (device_id, _), decision in sorted(plan.auth_decisions.items()):
        body = {"type": "auth_decision"} | to_builtins(decision)
        out.append((device_channel(device_id), json.dumps(body)))
    for cmd_id, result in sorted(plan.cmd_results.items()):
        out.append((cmd_channel(cmd_id), to_json(result).decode()))
    for row, charger_id in sessions:
        text = json.dumps({"type": "session", "charger_id": charger_id} | asdict(row), default=str)
        out.append((session_channel(row.device_session_id), text))
        if charger_id is not None:
            out.append((charger_channel(charger_id), text))
    return out


class LivePublisher:
    """Publishes to Redis, logging a failure once until Redis answers again."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._failing = False

    async def publish(self, messages: list[tuple[str, str]]) -> None:
        if not messages:
            return
        try:
            with redis_unavailable():
                async with self._redis.pipeline(transaction=False) as pipe:
                    for channel, text in messages:
                        pipe.publish(channel, text)
                    await pipe.execute()
        except DependencyUnavailable as exc:
            if not self._failing:
                log.error("live updates to Redis failing: %s", exc)
                self._failing = True
            return
        if self._failing:
            log.info("live updates to Redis recovered")
            self._failing = False
