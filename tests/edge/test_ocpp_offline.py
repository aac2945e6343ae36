"""The CSMS goes away mid-session and the agent is kill -9'd while it is away.

The agent runs as deployed (``chargemitra-agent run``, its TOML config, ``on_restart =
"resume"``) against a real Modbus TCP peer; the CSMS is the ``ocpp`` package's (TLS, Basic
auth). A session starts online; the CSMS stops; the session charges on (MeterValues queue in
the store), the agent is killed with SIGKILL and started again (the session resumes), the
session is stopped and a second one charged and stopped — all offline. The CSMS comes back
and, to exercise the retry rules, refuses the first MeterValues three times
(TransactionMessageAttempts 3: given up) and the StopTransaction twice (then accepted).

Afterwards every transaction message arrived once and in order, each with the transaction id
the CSMS gave its session (the second session's stop carries the id its start got after the
CSMS came back), meter start/stop equal the meter's delta, and every frame validates
against the official schemas. The issue's "10 minutes" offline is compressed: what matters
is that messages queue while away and a kill happens during it; a progress event every
5 s (the shortest ``[sessions] progress_interval_s``) gives several samples in seconds.
``CM_OCPP_OUTAGE_S=600`` runs the issue's full outage by hand: the CSMS then stays away at least
that long, half of it before the kill and the rest after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge_agent.control import request
from edge_agent.testing import ChargingMeter, ModbusPeer
from tests.cli.rig import cli
from tests.support.certs import Certs, make_certs

from .agent_rig import TAG, rows, seed_local_list, wait_for_socket, wait_until, write_config
from .ocpp_csms import check_frames, eventually, ocpp_config, running_csms

pytestmark = [pytest.mark.integration, pytest.mark.fault]

AGENT = [sys.executable, "-m", "edge_agent.cli", "run", "--log-level", "INFO", "--config"]
KEY = "offline-key-0123456789"
#: The least time the CSMS stays away (s); 0 in the suite, the issue's 600 by hand.
OUTAGE_S = float(os.environ.get("CM_OCPP_OUTAGE_S", "0"))


async def _away_until(since: float, share: float) -> None:
    """Keep the CSMS away until ``share`` of :data:`OUTAGE_S` has passed since ``since``."""
    await asyncio.sleep(max(0.0, since + OUTAGE_S * share - time.monotonic()))


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "certs").mkdir()
    return make_certs(tmp_path / "certs")


@asynccontextmanager
async def agent_process(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with (config.parent / "agent.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *AGENT,
            str(config),
            env={**os.environ},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        await wait_for_socket(config.parent / "agent.sock")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.wait()


def _queued(db: Path, action: str) -> int:
    return int(rows(db, "SELECT count(*) FROM ocpp_queue WHERE action = ?", action)[0][0])


async def _control(tmp: Path, **message: object) -> dict[str, object]:
    answer: dict[str, object] = await request(tmp / "agent.sock", dict(message))
    return answer


async def _until_available(tmp: Path) -> None:
    async def free() -> bool:
        status = await _control(tmp, cmd="status")
        connectors = status["connectors"]
        assert isinstance(connectors, list)
        return bool(connectors[0]["status"] == "Available")

    await wait_until(free, timeout_s=20)


async def test_offline_with_a_kill_9_every_transaction_message_arrives_once_in_order(
    tmp_path: Path, certs: Certs
) -> None:
    db = tmp_path / "agent.db"
    async with (
        running_csms(certs, password=KEY) as csms,
        ModbusPeer({1: ("sdm630", {})}, coil_units=(9,)) as peer,
    ):
        meter = ChargingMeter(peer, meter_unit=1, relay_unit=9, tick_s=0.2)
        physics = asyncio.create_task(meter.run(), name="meter-physics")
        extra = ocpp_config(
            tmp_path,
            csms.url,
            certs.ca,
            key=KEY,
            transaction_message_attempts=3,
            transaction_message_retry_interval_s=0,
        )
        config = write_config(tmp_path, port=peer.port, on_restart="resume", extra=extra)
        seed_local_list(db)
        rec = csms.record
        try:
            async with agent_process(config) as first:
                await eventually(lambda: rec.boots == 1)
                started = await _control(tmp_path, cmd="start", connector=1, id_tag=TAG)
                assert started["ok"], started
                assert peer.coil(9) is True
                await eventually(lambda: [a for a, _ in rec.transactions] == ["StartTransaction"])
                # The CSMS goes away mid-session; samples queue in the store.
                await csms.stop()
                away_since = time.monotonic()

                async def sampled(n: int) -> bool:
                    return _queued(db, "MeterValues") >= n

                await wait_until(lambda: sampled(1), timeout_s=20)
                await _away_until(away_since, 0.5)
                first.send_signal(signal.SIGKILL)
                await first.wait()
            async with agent_process(config):
                # Resumed after the kill: it charges on, and samples keep queueing.
                await wait_until(lambda: sampled(2), timeout_s=20)
                assert (await _control(tmp_path, cmd="stop", connector=1))["ok"]
                await _until_available(tmp_path)
                again = await _control(tmp_path, cmd="start", connector=1, id_tag=TAG)
                assert again["ok"], again
                await wait_until(lambda: sampled(3), timeout_s=20)
                assert (await _control(tmp_path, cmd="stop", connector=1))["ok"]

                async def both_stops() -> bool:
                    return _queued(db, "StopTransaction") == 2

                await wait_until(both_stops, timeout_s=5)
                assert _queued(db, "StartTransaction") == 1
                # The technician sees the link down and the queue waiting.
                status = await cli("sync", "status", "--json", config=config)
                assert status.code == 1, status
                ocpp = status.json()["ocpp"]
                assert ocpp["connected"] is False
                assert ocpp["queue"]["by_action"]["StopTransaction"] == 2
                assert ocpp["queue"]["rows"] == _queued(db, "MeterValues") + 3
                doctor = await cli("doctor", "--json", config=config)
                assert doctor.check("CSMS link")["level"] == "FAIL", doctor.stdout
                # Back online: the first sample is refused until given up, the first stop
                # twice (then accepted).
                csms.refusals = {"MeterValues": 3, "StopTransaction": 2}
                await _away_until(away_since, 1.0)
                await csms.start()
                await eventually(
                    lambda: len([a for a, _ in rec.transactions if a == "StopTransaction"]) == 2
                )
                await wait_until(lambda: _empty(db), timeout_s=10)
                status = await cli("sync", "status", "--json", config=config)
                assert status.code == 0, status
                ocpp = status.json()["ocpp"]
                assert (ocpp["connected"], ocpp["registration"]) == (True, "Accepted")
                assert ocpp["queue"]["rows"] == 0
                assert ocpp["given_up"] == 1
                doctor = await cli("doctor", "--json", config=config)
                assert doctor.check("CSMS link")["level"] == "PASS", doctor.stdout
        finally:
            physics.cancel()
    assert csms.refused == ["MeterValues"] * 3 + ["StopTransaction"] * 2
    sessions = rows(
        db,
        "SELECT session_id, meter_start_wh, meter_stop_wh, energy_wh "
        "FROM sessions ORDER BY started_at",
    )
    assert len(sessions) == 2
    updated = {
        sid: rows(
            db,
            "SELECT count(*) FROM session_events WHERE session_id = ? AND event = 'updated'",
            sid,
        )[0][0]
        for sid, *_ in sessions
    }
    actions = [a for a, _ in rec.transactions]
    n1, n2 = updated[sessions[0][0]] - 1, updated[sessions[1][0]]  # one sample given up
    one, two = ["MeterValues"] * n1, ["MeterValues"] * n2
    begin, end = ["StartTransaction"], ["StopTransaction"]
    assert actions == begin + one + end + begin + two + end
    first_id, second_id = 1001, 1002
    by_session = [rec.transactions[: 2 + n1], rec.transactions[2 + n1 :]]
    for (_, meter_start, meter_stop, energy), messages, tid in zip(
        sessions, by_session, (first_id, second_id), strict=True
    ):
        (_, start), *samples, (_, stop) = messages
        assert start["meter_start"] == meter_start
        assert stop["meter_stop"] == meter_stop == meter_start + energy
        assert stop["transaction_id"] == tid
        assert stop["id_tag"] == start["id_tag"] == TAG
        assert all(s["transaction_id"] == tid for _, s in samples)
        stamps = [s["meter_value"][0]["timestamp"] for _, s in samples]
        assert stamps == sorted(set(stamps))  # each sample once, in order
    assert check_frames(csms.received, csms.sent) > 8


async def _empty(db: Path) -> bool:
    return rows(db, "SELECT count(*) FROM ocpp_queue") == [(0,)]
