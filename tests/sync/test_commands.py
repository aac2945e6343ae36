"""Commands over the real broker: executed once, refused when stale or malformed, always
answered by cmd_id when one can be read — and never a crash."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import msgspec
import paho.mqtt.client as paho
import pytest

from edge_agent.sync.service import SyncService
from edge_agent.testing import Acker, RecordingHandler
from protocols.enums import CommandStatus, MessageKind
from protocols.ids import new_ulid
from protocols.messages import Command, CommandResult, Diagnostics, StopSession, encode_message
from protocols.topics import topic
from tests.support.certs import Certs
from tests.support.mosquitto import Broker
from tests.sync.rig import (
    DEVICE,
    running,
    sync_settings,
    wait_until,
    wall_clock,
)

pytestmark = pytest.mark.integration


def command(
    action: object, *, expires_in: timedelta = timedelta(minutes=1), cmd_id: str | None = None
) -> Command:
    now = datetime.now(UTC)
    return msgspec.convert(
        {
            "msg_id": new_ulid(),
            "device_id": DEVICE,
            "seq": 1,
            "ts": now,
            "clock_synced": True,
            "cmd_id": cmd_id or new_ulid(),
            "expires_at": now + expires_in,
            "action": action,
        },
        Command,
    )


def results(acker: Acker) -> dict[str, list[CommandResult]]:
    out: dict[str, list[CommandResult]] = {}
    for message in acker.received[DEVICE].by_seq.values():
        if isinstance(message, CommandResult):
            out.setdefault(message.cmd_id, []).append(message)
    return out


def send(api: paho.Client, payload: bytes) -> None:
    api.publish(topic(DEVICE, MessageKind.CMD), payload, qos=1).wait_for_publish(5)


async def test_commands_are_answered_once_and_stale_ones_not_run(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker, api: paho.Client
) -> None:
    assert broker.tls_port is not None
    handler = RecordingHandler()
    sync = SyncService(
        store, sync_settings(broker.tls_port, certs.ca), handler=handler, clock=wall_clock()
    )
    fresh = command(Diagnostics())
    stale = command(StopSession(session_id=new_ulid()), expires_in=timedelta(seconds=-1))
    async with running(sync):
        await wait_until(lambda: sync.stats.connected, 10, "the link")
        for cmd in (fresh, fresh, stale):  # the fresh one twice: a redelivery
            send(api, encode_message(cmd))
        await wait_until(lambda: len(results(acker)) == 2, 10, "two answers")
        await wait_until(lambda: sync.stats.acked_rows >= 2, 10, "answers acked")
    got = results(acker)
    assert [r.status for r in got[fresh.cmd_id]] == [CommandStatus.ACCEPTED]
    assert [r.status for r in got[stale.cmd_id]] == [CommandStatus.EXPIRED]
    assert [c.cmd_id for c in handler.executed] == [fresh.cmd_id]  # stale one never ran


async def test_bad_commands_are_rejected_by_cmd_id_and_the_agent_lives_on(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker, api: paho.Client
) -> None:
    assert broker.tls_port is not None
    handler = RecordingHandler()
    sync = SyncService(
        store, sync_settings(broker.tls_port, certs.ca), handler=handler, clock=wall_clock()
    )
    good = json.loads(encode_message(command(Diagnostics())))
    unknown = {**good, "cmd_id": new_ulid(), "action": {"name": "self_destruct"}}
    wrong_type = {**good, "cmd_id": new_ulid(), "expires_at": 12}
    oversized = {**good, "cmd_id": new_ulid(), "pad": "x" * 300_000}
    async with running(sync):
        await wait_until(lambda: sync.stats.connected, 10, "the link")
        send(api, b"\xff not json at all")
        send(api, b'{"cmd_id": "not-a-ulid"}')
        for bad in (unknown, wrong_type, oversized):
            send(api, json.dumps(bad).encode())
        after = command(Diagnostics())
        send(api, encode_message(after))  # still alive and working
        await wait_until(lambda: len(results(acker)) == 4, 10, "four answers")
    got = results(acker)
    for bad in (unknown, wrong_type, oversized):
        (result,) = got[bad["cmd_id"]]
        assert result.status is CommandStatus.REJECTED
        assert result.detail
    assert (
        "self_destruct" in got[unknown["cmd_id"]][0].detail
        or "action" in got[unknown["cmd_id"]][0].detail
    )
    assert "262144" in got[oversized["cmd_id"]][0].detail
    assert [r.status for r in got[after.cmd_id]] == [CommandStatus.ACCEPTED]
    assert [c.cmd_id for c in handler.executed] == [after.cmd_id]
