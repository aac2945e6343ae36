"""Issue 13 acceptance: a hostile device beside a well-behaved one.

A provisioned device, with its own valid credentials, subscribes, publishes and connects every
way it should not — others' topics, wildcards, ``$SYS/#``, ``$share/...``, the broker's admin
topic, another device's client id, oversized and out-of-range payloads — while a
well-behaved device runs beside it. The broker is the project's own config, ingest is the
real ``chargemitra-cloud ingest`` process writing to PostgreSQL, commands go out through the
cloud's own broker client as ``cloud-api``. The well-behaved device's data all arrives
exactly once, its commands all reach it (and nothing else does), and every attack is refused.
"""

from __future__ import annotations

import json

import pytest

from cloud.broker import open_broker_link
from cloud.pg import PgConnection
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import MAX_PAYLOAD_BYTES, Ack, encode_message, parse_message
from protocols.testing import session_events, status, telemetry
from protocols.topics import UPLINK_KINDS, ingest_filter, topic
from tests.cloud.test_broker_acl import NOT_AUTHORIZED, seed_devices
from tests.support.cloud_env import add_device, make_settings
from tests.support.mosquitto import Broker
from tests.support.probe import Probe
from tests.support.sim_device import SimDevice, wait_for
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

GOOD, EVIL = "dev-good", "dev-evil"
COMMANDS = 10

#: Every filter the hostile device tries; the broker must refuse each one in its SUBACK.
FORBIDDEN_FILTERS = [
    *(ingest_filter(kind) for kind in sorted(UPLINK_KINDS)),
    "$share/ingest/cm/v1/d/#",
    f"$share/evil/{topic(GOOD, MessageKind.CMD)}",
    f"$share/evil/{topic(EVIL, MessageKind.CMD)}",
    "#",
    "+/#",
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "$CONTROL/dynamic-security/v1/response",
    "$CONTROL/#",
    "cm/v1/d/+/telemetry",
    "cm/v1/d/+/cmd",
    "cm/v1/d/+/+",
    topic(GOOD, MessageKind.CMD),
    topic(GOOD, MessageKind.ACK),
    topic(GOOD, MessageKind.TELEMETRY),
    f"cm/v1/d/{GOOD}/#",
    f"cm/v1/d/{EVIL}/#",
    f"cm/v1/d/{EVIL}/+",
    topic(EVIL, MessageKind.TELEMETRY),
]

#: Every topic the hostile device publishes a forgery to; none may reach anyone.
FORBIDDEN_TOPICS = [
    *(topic(GOOD, kind) for kind in sorted(UPLINK_KINDS)),
    topic(GOOD, MessageKind.CMD),
    topic(GOOD, MessageKind.ACK),
    topic(EVIL, MessageKind.CMD),
    topic(EVIL, MessageKind.ACK),
    "$CONTROL/dynamic-security/v1",
    "$SYS/broker/forged",
    "cm/v1/d/other/telemetry",
    f"cm/v1/d/{EVIL}/other",
]


def out_of_range_telemetry(device_id: str, seq: int) -> bytes:
    """A well-formed batch whose readings are physically impossible (the poison of item 1:
    two finite 1e308 in one bucket overflowed the rollup)."""
    body = json.loads(encode_message(telemetry(device_id, seq, readings=2)))
    for reading in body["readings"]:
        reading["values"] = dict.fromkeys(reading["values"], 1e308)
    return json.dumps(body).encode()


def acked_as_dead(probe: Probe, device_id: str) -> set[int]:
    """The seqs the cloud's acks to ``probe`` name as dead-lettered."""
    dead: set[int] = set()
    for name, payload in list(probe.messages):
        if name == topic(device_id, MessageKind.ACK):
            ack = parse_message(MessageKind.ACK, payload)
            assert isinstance(ack, Ack)
            dead.update(ack.dead_lettered)
    return dead


async def test_a_hostile_device_is_refused_everything_and_its_neighbour_loses_nothing(
    broker: Broker,
    workers: Workers,
    pg: PgConnection,
    db_url: str,
    service_passwords: dict[str, str],
) -> None:
    await seed_devices(pg, GOOD, EVIL)
    good = SimDevice(GOOD, add_device(broker, GOOD), broker.port)
    evil_password = add_device(broker, EVIL)
    evil = Probe(EVIL, evil_password, broker.port, EVIL)
    received: list[bytes] = []
    good.on_extra = lambda msg: received.append(bytes(msg.payload))
    workers.start(0)
    await good.connect()
    good.client.subscribe(topic(GOOD, MessageKind.CMD), qos=1)
    await wait_for(lambda: len(good.subscribe_codes) == 2, timeout_s=10)
    assert not any(code.is_failure for code in good.subscribe_codes)
    # The worker's ack of this status proves its shared subscription is in place.
    good.queue([status(GOOD, 1)])
    await good.drain(timeout_s=60, resend_every_s=2)

    # Subscriptions: every foreign filter is refused; its own command topics are not.
    assert not (await evil.connect()).is_failure
    refused = {f: (await evil.subscribe(f)).value for f in FORBIDDEN_FILTERS}
    assert refused == dict.fromkeys(FORBIDDEN_FILTERS, NOT_AUTHORIZED)
    for own in (topic(EVIL, MessageKind.CMD), topic(EVIL, MessageKind.ACK)):
        assert not (await evil.subscribe(own)).is_failure

    # Client ids: taking the good device's is refused, and the good device stays on.
    for session_expiry_s in (0, 3600):
        impostor = Probe(EVIL, evil_password, broker.port, GOOD)
        assert (await impostor.connect(session_expiry_s=session_expiry_s)).value == NOT_AUTHORIZED
        impostor.close()

    # The good device's traffic, published once and never resent, beside forgeries and
    # poison from the hostile one, and commands from the cloud.
    seq = 2
    batches = [telemetry(GOOD, seq + i, readings=5, first_index=i * 5) for i in range(40)]
    seq += len(batches)
    events = session_events(GOOD, new_ulid(), seq, updates=4)
    seq += len(events)
    good.queue([*batches, *events, status(GOOD, seq)])
    good.send_unacked()
    for name in FORBIDDEN_TOPICS:
        answer = await evil.publish(name, b'{"forged": true}')
        assert answer.is_failure, (name, answer)
    escalate = {
        "commands": [{"command": "addClientRole", "username": EVIL, "rolename": "cloud-api"}]
    }
    assert (
        await evil.publish("$CONTROL/dynamic-security/v1", json.dumps(escalate).encode())
    ).is_failure
    evil_telemetry = topic(EVIL, MessageKind.TELEMETRY)
    await evil.publish(evil_telemetry, out_of_range_telemetry(EVIL, 101))
    await evil.publish(evil_telemetry, out_of_range_telemetry(EVIL, 102))
    oversized = json.dumps({"v": 1, "seq": 103, "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    await evil.publish(evil_telemetry, oversized)
    api_settings = make_settings(
        db_url, broker, service_passwords["cloud-api"], username="cloud-api"
    )
    async with open_broker_link(api_settings.mqtt, "api-hostile-test") as api:
        await wait_for(lambda: api.connected, timeout_s=10)
        for n in range(COMMANDS):
            await api.publish(topic(GOOD, MessageKind.CMD), f"cmd-{n}".encode(), expiry_s=300)
        await good.drain(timeout_s=120, resend_every_s=10**6)
        await wait_for(lambda: len(received) >= COMMANDS, timeout_s=30)

    # Its poison is dead-lettered and acked: wait for those acks while it is still connected
    # (it has no persistent session, so an ack published after the disconnect below is gone;
    # on a loaded machine ingest can take that long).
    await wait_for(lambda: acked_as_dead(evil, EVIL) >= {101, 102, 103}, timeout_s=60)
    # A packet past the broker's own limit costs the hostile device its connection only.
    evil.client.publish(evil_telemetry, b"x" * (2 * 1024 * 1024), qos=1)
    await wait_for(evil.disconnected.is_set, timeout_s=10)
    good.disconnect()
    evil.close()

    assert received == [f"cmd-{n}".encode() for n in range(COMMANDS)]
    assert not good.dead_lettered
    # All the hostile device ever received is the cloud's acks of its own messages.
    assert {name for name, _ in evil.messages} == {topic(EVIL, MessageKind.ACK)}
    rows = await pg.fetchval("SELECT count(*) FROM telemetry WHERE device_id = $1", GOOD)
    distinct = await pg.fetchval(
        "SELECT count(DISTINCT (seq, ts, quantity)) FROM telemetry WHERE device_id = $1", GOOD
    )
    assert rows == distinct == 40 * 5 * 2
    assert await pg.fetchval(
        "SELECT count(*) FROM session_events WHERE device_id = $1", GOOD
    ) == len(events)
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM dead_letters WHERE topic LIKE $1", f"cm/v1/d/{GOOD}/%"
        )
        == 0
    )
    # The hostile device's own poison and oversized payloads are dead letters, not readings.
    assert await pg.fetchval("SELECT count(*) FROM telemetry WHERE device_id = $1", EVIL) == 0
    dead = await pg.fetch(
        "SELECT seq, error_kind FROM dead_letters WHERE device_id = $1 OR topic = $2 ORDER BY seq",
        EVIL,
        evil_telemetry,
    )
    assert [r["seq"] for r in dead] == [101, 102, 103]
