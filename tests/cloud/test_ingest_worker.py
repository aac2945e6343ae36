"""The ingest worker against a real broker, PostgreSQL and Redis (in-process worker)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from cloud import migrate
from cloud.ingest.decode import Rejected, decode
from cloud.ingest.live import device_channel
from cloud.ingest.plan import plan_batch
from cloud.ingest.writer import write_batch
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, Settings
from cloud.workers.ingest import open_ingest_worker
from protocols.enums import AuthorizationStatus, CommandStatus, MessageKind
from protocols.ids import new_ulid
from protocols.messages import MAX_PAYLOAD_BYTES, encode_message
from protocols.testing import (
    auth_decision,
    command_result,
    session_events,
    status,
    telemetry,
)
from protocols.topics import ACK_QOS, topic
from tests.support.cloud_env import REDIS_URL, add_device
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice, wait_for

pytestmark = pytest.mark.integration


async def _seed_device(pg: PgConnection, device_id: str) -> None:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Host') ON CONFLICT DO NOTHING")
    await pg.execute(
        "INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'H') "
        "ON CONFLICT DO NOTHING"
    )
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, 'H1')", device_id)


async def _next_data(pubsub: PubSub) -> dict[str, Any] | None:
    # get_message answers None for the subscribe confirmation too: read past it.
    for _ in range(10):
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=1
        )
        if message is not None:
            return message
    return None


async def test_backlog_is_stored_once_acked_after_commit_and_published_live(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    await _seed_device(pg, "dev-a")
    devices = [SimDevice(d, add_device(broker, d), broker.port) for d in ("dev-a", "dev-b")]
    sessions: dict[str, list[str]] = {}
    for device in devices:
        seq = 1
        batches = []
        for b in range(20):
            batches.append(telemetry(device.device_id, seq, readings=100, first_index=b * 100))
            seq += 1
        device.queue(batches)
        sessions[device.device_id] = []
        for _ in range(2):
            sid = new_ulid()
            events = session_events(device.device_id, sid, seq, updates=4)
            seq += len(events)
            # Offline delivery: the stop arrives first, one update is lost for good.
            arrival = [events[-1], *events[:-1]]
            del arrival[3]
            device.queue(arrival)
            sessions[device.device_id].append(sid)
        device.queue([status(device.device_id, seq)])
    redis = Redis.from_url(REDIS_URL)
    pubsub = redis.pubsub()
    await pubsub.subscribe(device_channel("dev-a"))
    try:
        async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
            run = tg.create_task(worker.run(), name="ingest")
            for device in devices:
                await device.connect()
            replay = {d.device_id: dict(d.outbox) for d in devices}
            await asyncio.gather(*(d.drain(timeout_s=60) for d in devices))
            # Redeliver everything: all acked again, nothing stored twice.
            for device in devices:
                device.outbox.update(replay[device.device_id])
            await asyncio.gather(*(d.drain(timeout_s=60) for d in devices))
            live = await _next_data(pubsub)
            run.cancel()
        for device in devices:
            device.disconnect()
    finally:
        await pubsub.aclose()
        await redis.aclose()

    # Acks at QoS 0 (protocols/topics.py ACK_QOS): nothing in the cloud waits on a PUBACK.
    assert {q for d in devices for q in d.ack_qos} == {ACK_QOS} == {0}
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 2 * 20 * 100 * 2
    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == 40
    distinct = await pg.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT device_id, meter_id, ts, quantity FROM telemetry) t"
    )
    assert distinct == 2 * 20 * 100 * 2
    rows = await pg.fetch(
        "SELECT device_id, state, energy_wh, stop_reason, events_received, last_event_seq "
        "FROM sessions ORDER BY device_id, device_session_id"
    )
    assert len(rows) == 4
    for row in rows:
        assert row["state"] == "stopped"
        assert row["energy_wh"] == 500  # from the stopped event, whatever arrived after it
        assert row["stop_reason"] == "EVDisconnected"
        assert (row["events_received"], row["last_event_seq"]) == (5, 6)
    assert await pg.fetchval("SELECT online FROM devices WHERE id = 'dev-a'") is True
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert live is not None
    assert json.loads(live["data"])["device_id"] == "dev-a"
    # Every ack carries a fresh downlink seq for its device.
    for device in devices:
        ack_seqs = [a.seq for a in device.acks]
        assert len(set(ack_seqs)) == len(ack_seqs)


def _malformed(device_id: str, seq: int, rng: random.Random) -> tuple[MessageKind, bytes]:
    good = json.loads(encode_message(status(device_id, seq)))
    kind = rng.choice([MessageKind.STATUS, MessageKind.TELEMETRY, MessageKind.SESSION])
    variant = seq % 6
    if variant == 0:
        return kind, b"\xff\xfe not json"
    if variant == 1:
        return kind, json.dumps({**good, "seq": seq, "online": "yes"}).encode()
    if variant == 2:
        return kind, json.dumps({**good, "seq": seq, "v": 99}).encode()
    if variant == 3:
        return kind, json.dumps({**good, "seq": seq, "device_id": "someone-else"}).encode()
    if variant == 4:
        return kind, json.dumps([1, 2, seq]).encode()
    if seq % 100 == 5:  # a few oversized ones (each 256 KiB +)
        return kind, json.dumps({**good, "seq": seq, "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    return kind, json.dumps({**good, "seq": seq, "extra": True}).encode()


async def test_malformed_payloads_are_dead_lettered_with_reasons_and_the_worker_lives(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    rng = random.Random(6)
    device = SimDevice("dev-bad", add_device(broker, "dev-bad"), broker.port)
    unackable: list[tuple[MessageKind, bytes]] = []
    distinct: set[tuple[MessageKind, bytes]] = set()
    for seq in range(1, 1001):
        kind, payload = _malformed("dev-bad", seq, rng)
        distinct.add((kind, payload))
        if seq % 6 in (0, 4):  # no readable seq: stored, but nothing to ack
            unackable.append((kind, payload))
        else:
            device.queue_raw(seq, kind, payload)
    device.queue([status("dev-bad", 1001)])
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        # Drain first: its acks prove the worker's shared subscription is in place. A message
        # published before that has no subscriber and the broker drops it; the device resends
        # what was not acked, but these carry no readable seq and are never acked.
        await device.drain(timeout_s=60)
        for kind, payload in unackable:
            device.client.publish(topic("dev-bad", kind), payload, qos=1)
        await wait_for(lambda: worker.stats.messages >= 1001, timeout_s=30)
        run.cancel()
    device.disconnect()
    # One row per distinct message (the 167 copies of b"\xff\xfe not json" on a topic are
    # one row each topic), every delivery counted.
    assert await pg.fetchval("SELECT sum(deliveries) FROM dead_letters") == 1000
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == len(distinct)
    reasons = await pg.fetch("SELECT error_kind, count(*) AS n FROM dead_letters GROUP BY 1")
    kinds = {r["error_kind"] for r in reasons}
    assert kinds == {"MalformedJSON", "InvalidMessage", "UnsupportedVersion", "PayloadTooLarge"}
    assert await pg.fetchval("SELECT count(*) FROM dead_letters WHERE reason = ''") == 0
    biggest = await pg.fetchval("SELECT max(length(payload)) FROM dead_letters")
    assert biggest <= settings.ingest.dead_letter_payload_max
    # Rejections that carried a seq were acked as dead-lettered; the valid one was stored.
    assert 1001 not in device.dead_lettered
    assert len(device.dead_lettered) == 1000 - len(unackable)
    assert await pg.fetchval("SELECT sum(deliveries) FROM dead_letters WHERE seq IS NULL") == len(
        unackable
    )


@asynccontextmanager
async def _batches_locked(db_url: str) -> AsyncIterator[None]:
    """Hold ``telemetry_batches`` for the block: a worker's telemetry transaction waits behind
    this lock until the block ends."""
    blocker = await connect(DbSettings(url=db_url))
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE telemetry_batches IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await close(blocker)


async def test_no_ack_before_the_commit_and_the_rows_are_visible_when_it_arrives(
    settings: Settings, broker: Broker, pg: PgConnection, db_url: str
) -> None:
    device = SimDevice("dev-c", add_device(broker, "dev-c"), broker.port)
    device.queue([telemetry("dev-c", 1, readings=5)])
    seen_at_ack: list[int] = []
    try:
        async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
            run = tg.create_task(worker.run(), name="ingest")
            await device.connect()
            async with _batches_locked(db_url):
                device.send_unacked()
                await wait_for(
                    lambda: "ingest-0" in broker.log_text() and device.unacked() == 1,
                    timeout_s=5,
                )
                await asyncio.sleep(1.0)  # give a wrong implementation time to ack early
                assert device.acks == []
            await device.drain(timeout_s=30)
            seen_at_ack.append(await pg.fetchval("SELECT count(*) FROM telemetry"))
            run.cancel()
    finally:
        device.disconnect()
    assert seen_at_ack == [10]


async def test_session_events_command_results_and_decisions_pass_telemetry_the_worker_is_stuck_on(
    settings: Settings, broker: Broker, pg: PgConnection, db_url: str
) -> None:
    """The urgent lane (cloud/workers/ingest.py): with telemetry unable to commit, what a
    driver waits for — a session start, the unlock's command result, the decision — is still
    stored and acked; the telemetry follows once it can. With one lane the urgent messages
    waited behind the stuck batch (in it, or queued after it)."""
    await _seed_device(pg, "dev-u")
    device = SimDevice("dev-u", add_device(broker, "dev-u"), broker.port)
    # Telemetry first, as it would be queued ahead of them in a busy worker.
    device.queue(telemetry("dev-u", seq, readings=5, first_index=seq * 10) for seq in (1, 2, 3))
    started = session_events("dev-u", new_ulid(), 4, updates=0)[0]
    cmd_id = new_ulid()
    answer = command_result("dev-u", 5, cmd_id)
    decision = auth_decision("dev-u", 6, status=AuthorizationStatus.ACCEPTED)
    device.queue([started, answer, decision])
    try:
        async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
            run = tg.create_task(worker.run(), name="ingest")
            await device.connect()
            async with _batches_locked(db_url):
                device.send_unacked()
                await wait_for(lambda: device.unacked() == 3, timeout_s=10)
                assert sorted(device.outbox) == [1, 2, 3]
                assert (
                    await pg.fetchval(
                        "SELECT result_status FROM device_commands WHERE cmd_id = $1", cmd_id
                    )
                    == CommandStatus.ACCEPTED.value
                )
                assert await pg.fetchval("SELECT count(*) FROM sessions") == 1
                assert await pg.fetchval("SELECT count(*) FROM auth_decisions") == 1
            await device.drain(timeout_s=30)
            run.cancel()
    finally:
        device.disconnect()
    # 3 batches x 5 readings x 2 values
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 30


async def test_the_urgent_lane_stores_and_acks_while_the_workers_event_loop_is_held(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    """The urgent lane runs on a thread and event loop of its own (cloud/workers/
    loop_thread.py): with the worker's loop held — as a big telemetry batch's planning and
    acking hold it for a while under load — a command result is still stored and acked.
    Sharing the loop, it waited for the loop to come back."""
    await _seed_device(pg, "dev-h")
    device = SimDevice("dev-h", add_device(broker, "dev-h"), broker.port)
    cmd_id = new_ulid()
    answer = command_result("dev-h", 1, cmd_id)
    device.queue([answer, telemetry("dev-h", 2, readings=2)])
    try:
        async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
            run = tg.create_task(worker.run(), name="ingest")
            await device.connect()
            device.send_unacked()
            # Held on purpose: this test's loop is the worker's. The device and the urgent
            # lane run on threads; only the telemetry lane (on this loop) cannot move.
            held_until = time.monotonic() + 20
            while device.unacked() > 1 and time.monotonic() < held_until:
                time.sleep(0.01)  # noqa: ASYNC251
            left_while_held = sorted(device.outbox)
            await device.drain(timeout_s=30)
            run.cancel()
    finally:
        device.disconnect()
    assert left_while_held == [2]  # the command result acked, the telemetry still waiting
    assert (
        await pg.fetchval("SELECT result_status FROM device_commands WHERE cmd_id = $1", cmd_id)
        == CommandStatus.ACCEPTED.value
    )
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 4


async def test_a_message_postgresql_cannot_store_is_isolated_and_dead_lettered(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    device = SimDevice("dev-nul", add_device(broker, "dev-nul"), broker.port)
    good = session_events("dev-nul", new_ulid(), 1, updates=0)  # started (1), stopped (2)
    # Valid for the wire contract, refused by PostgreSQL (text cannot hold NUL).
    poison = session_events("dev-nul", new_ulid(), 3, updates=0, ref="bad\x00ref")[0]
    device.queue([*good, poison, telemetry("dev-nul", 4, readings=3)])
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        await device.drain(timeout_s=30)
        run.cancel()
    device.disconnect()
    assert device.dead_lettered == {3}
    assert await pg.fetchval("SELECT count(*) FROM sessions") == 1
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 6
    [row] = await pg.fetch("SELECT error_kind, seq FROM dead_letters")
    assert (row["error_kind"], row["seq"]) == ("Unstorable", 3)


async def test_a_resent_batch_is_dropped_by_seq_even_under_a_new_msg_id(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    device = SimDevice("dev-r", add_device(broker, "dev-r"), broker.port)
    device.queue([telemetry("dev-r", 1, readings=4)])
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        await device.drain(timeout_s=30)
        device.queue([telemetry("dev-r", 1, readings=4)])  # same seq, fresh msg_id
        await device.drain(timeout_s=30)
        run.cancel()
    device.disconnect()
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 8
    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == 1


async def test_decisions_are_stored_once_acked_after_commit_and_bad_ones_dead_lettered(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    device = SimDevice("dev-auth", add_device(broker, "dev-auth"), broker.port)
    session_id = new_ulid()
    decisions = [
        auth_decision(
            "dev-auth",
            seq,
            status,
            session_id=session_id if status is AuthorizationStatus.ACCEPTED else None,
        )
        for seq, status in enumerate(AuthorizationStatus, start=1)
    ]
    device.queue(decisions)
    started = session_events("dev-auth", session_id, len(decisions) + 1, updates=0, stop=False)
    device.queue(started)
    bad_seq = len(decisions) + 2
    raw_pin = json.loads(encode_message(auth_decision("dev-auth", bad_seq)))
    raw_pin["credential"] = {"kind": "Pin", "ref": "12345678"}  # a PIN in the clear: refused
    device.queue_raw(bad_seq, MessageKind.AUTH, json.dumps(raw_pin).encode())
    redis = Redis.from_url(REDIS_URL)
    pubsub = redis.pubsub()
    await pubsub.subscribe(device_channel("dev-auth"))
    try:
        async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
            run = tg.create_task(worker.run(), name="ingest")
            await device.connect()
            replay = dict(device.outbox)
            await device.drain(timeout_s=30)
            device.outbox.update(replay)  # redeliver everything: acked again, stored once
            await device.drain(timeout_s=30)
            live = await _next_data(pubsub)
            run.cancel()
        device.disconnect()
    finally:
        await pubsub.aclose()
        await redis.aclose()

    rows = await pg.fetch(
        "SELECT seq, msg_id, status, credential_kind, credential_ref, reason, decided_at, "
        "clock_synced, device_session_id, connector FROM auth_decisions "
        "WHERE device_id = 'dev-auth' ORDER BY seq"
    )
    assert [
        (r["seq"], r["msg_id"], r["status"], r["credential_ref"], r["decided_at"]) for r in rows
    ] == [(d.seq, d.msg_id, d.status.value, d.credential.ref, d.decided_at) for d in decisions]
    assert {(r["credential_kind"], r["connector"], r["clock_synced"]) for r in rows} == {
        ("IdTag", 1, True)
    }
    # The accepted decision names the session it started: the two join.
    joined = await pg.fetch(
        "SELECT a.status FROM auth_decisions a JOIN sessions s "
        "ON s.device_id = a.device_id AND s.device_session_id = a.device_session_id"
    )
    assert [r["status"] for r in joined] == ["Accepted"]
    # Dead letters keep every delivery (no key): the refused decision, sent twice, twice.
    dead = await pg.fetch("SELECT topic, error_kind, reason, seq FROM dead_letters")
    assert {(d["topic"], d["error_kind"], d["seq"]) for d in dead} == {
        ("cm/v1/d/dev-auth/auth", "InvalidMessage", bad_seq)
    }
    assert all("never the PIN" in d["reason"] for d in dead)
    assert device.dead_lettered == {bad_seq}
    acked = {seq for ack in device.acks for seq in range(1, bad_seq + 1) if ack.covers(seq)}
    assert acked == set(range(1, bad_seq + 1))
    assert live is not None
    assert json.loads(live["data"])["type"] == "auth_decision"


async def test_a_redelivered_dead_letter_is_one_row_counting_its_deliveries(
    pg: PgConnection,
) -> None:
    """A device resends what was not acked (and a crashed worker's batch comes again): one
    malformed message is one row, whose ``deliveries`` counts every arrival."""
    status_topic = topic("dev-x", MessageKind.STATUS)
    bad = decode(status_topic, b'{"not": "a status", "seq": 7}')
    other = decode(status_topic, b"[1, 2]")
    elsewhere = decode(topic("dev-y", MessageKind.STATUS), b"[1, 2]")
    assert all(isinstance(r, Rejected) for r in (bad, other, elsewhere))
    await write_batch(pg, plan_batch([bad, other, bad]), dead_letter_payload_max=1024)
    await write_batch(pg, plan_batch([bad, elsewhere]), dead_letter_payload_max=1024)
    rows = await pg.fetch(
        "SELECT topic, payload, seq, deliveries, last_received_at > received_at AS again "
        "FROM dead_letters ORDER BY id"
    )
    assert [(r["topic"], r["payload"], r["seq"], r["deliveries"], r["again"]) for r in rows] == [
        (status_topic, b'{"not": "a status", "seq": 7}', 7, 3, True),
        (status_topic, b"[1, 2]", None, 1, False),
        (topic("dev-y", MessageKind.STATUS), b"[1, 2]", None, 1, False),
    ]


async def test_migration_0006_merges_stored_copies_and_keeps_cut_payloads_apart(
    db_url: str,
) -> None:
    """Dead letters stored per delivery before revision 0006 become one row per message,
    counting the copies; payloads stored cut to the size limit are never merged, as two long
    messages may share the stored prefix."""
    await asyncio.to_thread(migrate.downgrade, db_url, "0005")
    try:
        conn = await connect(DbSettings(url=db_url))
        try:
            insert = (
                "INSERT INTO dead_letters (topic, device_id, payload, payload_bytes, error_kind,"
                " reason, seq, received_at) VALUES ($1, 'd', $2, $3, 'InvalidMessage', 'r', $4,"
                " TIMESTAMPTZ '2026-11-24 06:00Z' + $5 * INTERVAL '1 minute')"
            )
            for minute in range(3):  # one message, delivered three times
                await conn.execute(insert, "t/a", b"same", 4, 1, minute)
            await conn.execute(insert, "t/b", b"same", 4, 1, 0)  # another topic
            for minute in range(2):  # two different long messages, both cut to one prefix
                await conn.execute(insert, "t/a", b"prefix", 9000, None, minute)
        finally:
            await close(conn)
    finally:
        await asyncio.to_thread(migrate.upgrade, db_url, "head")
    conn = await connect(DbSettings(url=db_url))
    try:
        rows = await conn.fetch(
            "SELECT topic, payload, deliveries, last_received_at - received_at AS span"
            " FROM dead_letters ORDER BY id"
        )
    finally:
        await close(conn)
    assert [(r["topic"], r["payload"], r["deliveries"], r["span"].seconds) for r in rows] == [
        ("t/a", b"same", 3, 120),
        ("t/b", b"same", 1, 0),
        ("t/a", b"prefix", 1, 0),
        ("t/a", b"prefix", 1, 0),
    ]
