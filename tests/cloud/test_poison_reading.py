"""A poison reading must not stop ingest (issue 13, item 1), against real services.

Before: a device's two readings of ``1e308`` in one 15-minute bucket were accepted, the
rollup's ``sum(value)`` overflowed, the refresh error escaped the worker's task group, the
process exited with the marker still pending — and every restarted worker died on it again.
The host's telemetry chart answered 500 on the same rows. Now the wire contract bounds every
quantity, aggregates are clamped so rows stored before that cannot overflow them, and each
background job of a worker survives its own failure.

The workers are real ``chargemitra-cloud ingest`` processes (tests/support/workers.py) with a
one-second rollup refresh; devices are simulated on the wire with their own credentials.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from cloud.pg import PgConnection
from cloud.settings import env_name
from cloud.telemetry.rollup import mark_pending
from cloud.telemetry.storage import TelemetryBackend
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import encode_message
from protocols.testing import T0, session_events, telemetry
from tests.cloud.test_charger_status import listed_with_device
from tests.support.cloud_env import add_device
from tests.support.market import Api
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice, wait_for
from tests.support.workers import Workers

pytestmark = [pytest.mark.integration, pytest.mark.fault]

POISON = 1e308


def _start(workers: Workers, index: int = 0) -> None:
    workers.env[env_name("ingest", "rollup_refresh_s")] = "1"
    workers.env[env_name("app", "log_level")] = "INFO"
    workers.start(index)


async def _joined(broker: Broker, index: int = 0) -> None:
    await wait_for(lambda: Workers.joined(broker, index), timeout_s=30)


def _alive(workers: Workers, index: int = 0) -> bool:
    return workers.procs[index].poll() is None


async def _until_refreshed_or_dead(
    pg: PgConnection, workers: Workers, *, left: int = 0, index: int = 0
) -> None:
    """Wait until at most ``left`` rollup markers are pending, or the worker has exited."""
    pending: list[int] = [-1]

    async def poll() -> bool:
        pending[0] = await pg.fetchval("SELECT count(*) FROM telemetry_rollup_pending")
        return pending[0] <= left or not _alive(workers, index)

    await _wait_async(poll, timeout_s=60)


async def _wait_async(condition: Callable[[], Awaitable[bool]], *, timeout_s: float) -> None:
    """``wait_for`` for a condition that needs the database."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 -- the condition is a database query
            await asyncio.sleep(0.1)


def _poison_payload(device_id: str, seq: int) -> bytes:
    """Two finite readings of 1e308 W in one 15-minute bucket — valid JSON numbers, built by
    hand because the models refuse to build them now."""
    data = json.loads(encode_message(telemetry(device_id, seq, readings=2)))
    for reading in data["readings"]:
        reading["values"]["power_w"] = POISON
    return json.dumps(data).encode()


async def test_a_device_sending_1e308_is_refused_and_ingest_runs_on(
    broker: Broker, pg: PgConnection, workers: Workers
) -> None:
    _start(workers)
    await _joined(broker)
    good = SimDevice("dev-good", add_device(broker, "dev-good"), broker.port)
    hostile = SimDevice("dev-poison", add_device(broker, "dev-poison"), broker.port)
    good.queue([telemetry("dev-good", 1, readings=10)])
    hostile.queue_raw(1, MessageKind.TELEMETRY, _poison_payload("dev-poison", 1))
    await good.connect()
    await hostile.connect()
    await good.drain(timeout_s=30)
    await hostile.drain(timeout_s=30)
    await _until_refreshed_or_dead(pg, workers)

    assert _alive(workers), (
        "the ingest worker exited: "
        + (workers.log_dir / "ingest-0.log").read_text(errors="replace")[-2000:]
    )
    # The poison is a dead letter (acked as such, so the device stops resending it), never a row.
    assert hostile.dead_lettered == {1}
    assert await pg.fetchval("SELECT count(*) FROM telemetry WHERE device_id = 'dev-poison'") == 0
    letter = await pg.fetchrow(  # type: ignore[attr-defined]
        "SELECT error_kind, reason FROM dead_letters WHERE device_id = 'dev-poison'"
    )
    assert letter["error_kind"] == "InvalidMessage"
    assert "values.power_w: 1e+308 is outside its bounds" in letter["reason"]
    # Ingest and the rollup carry on for everyone else.
    good.queue([telemetry("dev-good", 2, readings=10, first_index=10)])
    await good.drain(timeout_s=30)
    await _until_refreshed_or_dead(pg, workers)
    assert _alive(workers)
    assert await pg.fetchval("SELECT sum(n) FROM telemetry_15m WHERE quantity = 'power_w'") == 20
    good.disconnect()
    hostile.disconnect()


async def _store_unbounded_rows(pg: PgConnection, device_id: str) -> None:
    """Rows and a marker exactly as ingest stored them under the unbounded contract."""
    rows = [
        (device_id, "m1", T0 + timedelta(seconds=i), "power_w", value, 1, True)
        for i, value in enumerate([POISON, POISON, 7000.0])
    ]
    await pg.copy_records_to_table(
        "telemetry",
        records=rows,
        columns=("device_id", "meter_id", "ts", "quantity", "value", "seq", "clock_synced"),
    )
    await mark_pending(pg, [(device_id, T0)])


async def test_extreme_rows_stored_before_the_bounds_do_not_stop_the_rollup(
    broker: Broker, pg: PgConnection, workers: Workers
) -> None:
    """The refresh computes the bucket (clamped) and every restarted worker stays up."""
    await _store_unbounded_rows(pg, "dev-legacy")
    for attempt in range(2):  # a worker restarted on the same marker: it died again, before
        _start(workers)
        await _until_refreshed_or_dead(pg, workers)
        assert _alive(workers), (
            f"attempt {attempt}: "
            + (workers.log_dir / "ingest-0.log").read_text(errors="replace")[-2000:]
        )
        workers.stop_all()

    rollup = await pg.fetchrow(  # type: ignore[attr-defined]
        "SELECT n, total, min_value, max_value FROM telemetry_15m WHERE device_id = 'dev-legacy'"
    )
    assert rollup["n"] == 3
    assert rollup["max_value"] == 2**53  # clamped to the largest bound of any quantity
    assert rollup["min_value"] == 7000.0
    assert rollup["total"] == 2 * 2**53 + 7000.0


async def test_the_hosts_chart_answers_on_extreme_rows_stored_before_the_bounds(
    market_api: Api, pg: PgConnection
) -> None:
    host, cid, device_id = await listed_with_device(market_api, pg, online=True, seen=T0)
    await _store_unbounded_rows(pg, device_id)
    chart = await market_api.client.get(
        f"/chargers/{cid}/telemetry",
        params={"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()},
        headers=host.headers,
    )
    assert chart.status_code == 200, chart.text
    (point,) = chart.json()["points"]
    assert point["count"] == 3
    assert point["max"] == 2**53
    assert point["mean"] == (2 * 2**53 + 7000.0) / 3


async def _rollup_rows_table(pg: PgConnection, backend: TelemetryBackend) -> str:
    """Where the rollup's rows are written: the table itself on plain PostgreSQL; under
    Timescale, the continuous aggregate's materialization hypertable (the view refuses DDL)."""
    if backend is TelemetryBackend.PLAIN:
        return "telemetry_15m"
    name: str = await pg.fetchval(
        "SELECT format('%I.%I', materialization_hypertable_schema, "
        "materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = 'telemetry_15m'"
    )
    return name


async def test_a_job_the_database_refuses_is_survived_and_the_rest_goes_through(
    broker: Broker, pg: PgConnection, workers: Workers, telemetry_backend: TelemetryBackend
) -> None:
    """Failures nothing anticipated — a rollup bucket and a session event PostgreSQL refuses
    with errors that are neither a lost connection nor bad data — are logged, counted and
    isolated: the worker stays up, every other bucket and message goes through, and the
    refused ones go through once the cause is gone.

    The refused device's readings are an hour after the other's: under Timescale a refresh
    covers a time window for every device in it, so a refusal is isolated to its bucket's
    window, not to one device (on plain PostgreSQL, to the device's bucket)."""
    # A trigger, not a CHECK constraint: Timescale refuses constraints on a materialization
    # table but fires its row triggers.
    rollup_rows = await _rollup_rows_table(pg, telemetry_backend)
    await pg.execute(
        """CREATE FUNCTION test_refuse_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.device_id = 'dev-refused' THEN RAISE EXCEPTION 'injected bucket refusal'; END IF;
            RETURN NEW;
        END $$"""
    )
    await pg.execute(
        f"CREATE TRIGGER test_refuse_bucket BEFORE INSERT ON {rollup_rows} "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_bucket()"
    )
    await pg.execute(
        """CREATE FUNCTION test_refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.device_id = 'dev-refused' THEN RAISE EXCEPTION 'injected refusal'; END IF;
            RETURN NEW;
        END $$"""
    )
    await pg.execute(
        "CREATE TRIGGER test_refuse_event BEFORE INSERT ON session_events "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_event()"
    )
    try:
        _start(workers)
        await _joined(broker)
        refused = SimDevice("dev-refused", add_device(broker, "dev-refused"), broker.port)
        good = SimDevice("dev-fine", add_device(broker, "dev-fine"), broker.port)
        refused.queue([telemetry("dev-refused", 1, readings=10, first_index=3600)])
        refused.queue(session_events("dev-refused", new_ulid(), 2, updates=1))
        good.queue([telemetry("dev-fine", 1, readings=10)])
        good.queue(session_events("dev-fine", new_ulid(), 2, updates=1))
        await refused.connect()
        await good.connect()
        refused.send_unacked()
        await good.drain(timeout_s=30)
        # The refused device's telemetry is acked; its session events are not.
        await wait_for(lambda: refused.unacked() == 3, timeout_s=30)
        refused.send_unacked()  # a resend fails the same way, and changes nothing else
        await _until_refreshed_or_dead(pg, workers, left=1)

        assert _alive(workers), (workers.log_dir / "ingest-0.log").read_text(errors="replace")[
            -2000:
        ]
        assert refused.unacked() == 3
        assert await pg.fetchval("SELECT count(*) FROM session_events") == 3  # dev-fine's
        assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
        pending = await pg.fetch("SELECT DISTINCT device_id FROM telemetry_rollup_pending")
        assert [r["device_id"] for r in pending] == ["dev-refused"]
        assert await pg.fetchval("SELECT sum(n) FROM telemetry_15m") == 10 * 2  # dev-fine's
        # The database changes before the worker writes its line: wait for the line.
        log_file = workers.log_dir / "ingest-0.log"

        def logged(line: str) -> Callable[[], bool]:
            return lambda: line in log_file.read_text(errors="replace")

        await wait_for(logged("of device dev-refused refused, kept pending"), timeout_s=30)
        await wait_for(logged("left for its device to resend"), timeout_s=30)
    finally:
        await pg.execute("DROP TRIGGER IF EXISTS test_refuse_event ON session_events")
        await pg.execute("DROP FUNCTION IF EXISTS test_refuse_event()")
        await pg.execute(f"DROP TRIGGER IF EXISTS test_refuse_bucket ON {rollup_rows}")
        await pg.execute("DROP FUNCTION IF EXISTS test_refuse_bucket()")

    # The cause is gone: the device's resend is stored, the bucket refreshed, once each.
    await refused.drain(timeout_s=60, resend_every_s=2)
    await _until_refreshed_or_dead(pg, workers)
    assert _alive(workers)
    assert await pg.fetchval("SELECT count(*) FROM session_events") == 6
    assert await pg.fetchval("SELECT sum(n) FROM telemetry_15m") == 10 * 2 * 2
    refused.disconnect()
    good.disconnect()
