"""The chaos rig: every part of ChargeMitra as its own process, started once for the suite.

* the project's cloud **Mosquitto** (deploy/mosquitto/cloud: TLS for devices, dynamic
  security with per-device credentials; tests/support/mosquitto.py), its devices' listener on
  the host end of the agent's veth pair;
* two **ingest workers** (``chargemitra-cloud ingest``, tests/support/workers.py);
* the **API** (``chargemitra-cloud serve``, tests/support/bookings_fixtures.serve_api) with its
  settlement job and the dummy payment provider;
* **PostgreSQL** (the migrated test database);
* the **simulator** (firmware_sim.SimSite: an SDM630 and a Modbus coil relay on an RS-485
  RTU line served on a pseudo-terminal, an EV plugged in) — the meter whose register the
  bill must equal;
* the **agent** (``chargemitra-agent run``, its TOML config, provisioned through the real
  pairing flow with ``chargemitra-agent provision``) inside a network namespace of its own
  (tests/e2e/netns.py), killed with SIGKILL, partitioned, its clock stepped.

The checks every scenario ends with (:meth:`Rig.check_books`) compare what the agent
committed (its SQLite store, read-only) with what the cloud holds: every reading once, every
session once, each session's billed energy equal to the simulator's register delta across it,
its bill, ledger, refund and invoice consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cloud.ledger.accounts import driver_account, host_account
from cloud.pg import PgConnection
from cloud.settings import Settings
from edge_agent.control import request as control_request
from firmware_sim.simsite import SimSite
from tests.e2e.netns import AgentNamespace
from tests.support.flow_rig import PRICE_PER_KWH_PAISE, SESSION_FEE_PAISE, register_wh, wait_for
from tests.support.market import ApiUser
from tests.support.mosquitto import Broker
from tests.support.workers import Workers

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: What a walk-up prepays (Wh): more than any scenario's session uses, so each bill is the
#: meter's delta and the rest is refunded.
PREPAID_WH = 3000
CARD_SUCCEEDS = "4111 1111 1111 1111"


def agent_config(site: Path, *, pty: str, keys: str | None) -> Path:
    """The installer's agent.toml (provisioning adds cloud.toml beside it)."""
    link = f'{{ transport = "rtu", port = "{pty}", baud = 115200 }}'
    hid = f'\n[[inputs.hid]]\ndevice = "{keys}"\nkind = "keypad"\nconnector = 1\n' if keys else ""
    path = site / "agent.toml"
    path.write_text(f"""
device_id = "unprovisioned"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 0.2
link = {link}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "modbus-coil", unit_id = 2, coil = 0, link = {link} }}

[bus]
retries = 1
timeout_s = 0.3
frame_gap_s = 0.0

[store]
path = "{site / "agent.db"}"

[sessions]
progress_interval_s = 5

[recovery]
on_restart = "resume"
on_shutdown = "end"

[clock]
trust = "always"
offset_file = "{site / "clock-offset"}"

[control]
socket_path = "{site / "agent.sock"}"
{hid}
[mqtt]
keepalive_s = 5
status_interval_s = 1
ack_timeout_s = 5
backlog_msgs_per_s = 5
""")
    return path


def expected_bill(energy_wh: int) -> int:
    """The one rule on the rig's charger, by hand: energy at 18 Rs/kWh to the nearest paisa
    plus the session fee, CGST 9 % + SGST 9 % each to the nearest paisa."""
    taxable = SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * energy_wh + 500) // 1000
    return taxable + 2 * ((taxable * 900 + 5000) // 10_000)


def host_share(energy_wh: int) -> int:
    """The unregistered host's share: the taxable value less the 10 % commission."""
    taxable = SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * energy_wh + 500) // 1000
    return taxable - (taxable * 1000 + 5000) // 10_000


@dataclass
class Charged:
    """One session as the test saw it from outside: the meter before and after."""

    device_session_id: str
    before_wh: int
    after_wh: int
    payment_id: str
    prepaid_paise: int


@dataclass
class Rig:
    tmp: Path
    ns: AgentNamespace
    broker: Broker
    workers: Workers
    settings: Settings
    api_url: str
    http: httpx.AsyncClient
    pg: PgConnection
    sim: SimSite
    site: Path
    config: Path
    device_id: str
    charger_id: str
    host: ApiUser
    driver: ApiUser
    agent: asyncio.subprocess.Process | None = None
    #: Every session charged so far, in order (the books are checked over all of them).
    charged: list[Charged] = field(default_factory=list)
    agent_starts: int = 0

    # --- the agent process ----------------------------------------------------------------

    @property
    def sock(self) -> Path:
        return self.site / "agent.sock"

    @property
    def store(self) -> Path:
        return self.site / "agent.db"

    async def start_agent(self, *, wait: bool = True) -> None:
        """``chargemitra-agent run`` inside the namespace; with ``wait``, returns once its
        control socket answers."""
        assert self.agent is None or self.agent.returncode is not None
        self.agent_starts += 1
        with (self.site / "agent.log").open("ab") as log:
            self.agent = await asyncio.create_subprocess_exec(
                *self.ns.exec_prefix(),
                str(BIN / "chargemitra-agent"),
                "run",
                "--log-level",
                "WARNING",
                "--config",
                str(self.config),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        if wait:
            await self.wait_ready()

    async def answers(self) -> bool:
        """Whether the agent's control socket answers now."""
        with contextlib.suppress(OSError, ValueError, TimeoutError):
            status = await control_request(self.sock, {"cmd": "status"}, timeout_s=1)
            return bool(status["ok"])
        return False

    async def wait_ready(self) -> None:
        agent = self.agent
        assert agent is not None

        async def answers() -> bool:
            if agent.returncode is not None:
                raise AssertionError(f"the agent exited {agent.returncode}: see {self.site}")
            return await self.answers()

        await wait_for(answers, "the agent's control socket", timeout_s=60)

    async def kill_agent(self) -> None:
        """SIGKILL: no handler runs, the relay stays as it was, the link drops uncleanly."""
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        await self.agent.wait()

    async def stop_agent(self) -> None:
        if self.agent is not None and self.agent.returncode is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.agent.wait()
            except TimeoutError:
                self.agent.kill()
                await self.agent.wait()

    async def control(self, message: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await control_request(self.sock, message)
        return answer

    def step_clock(self, offset_s: float) -> None:
        """Step the agent's wall clock to the host's + ``offset_s`` ([clock] offset_file)."""
        path = self.site / "clock-offset"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{offset_s}\n")
        tmp.replace(path)

    def _store_rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=10)
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()

    def readings(self) -> int:
        """Readings the agent has committed."""
        return int(self._store_rows("SELECT count(*) FROM readings")[0][0])

    def outbox(self) -> int:
        """Rows the agent has not seen acknowledged yet."""
        return int(self._store_rows("SELECT count(*) FROM outbox")[0][0])

    # --- the cloud ---------------------------------------------------------------------------

    def kill_broker(self) -> None:
        """SIGKILL the broker: what it held in memory (in-flight QoS 1 messages, sessions
        not yet persisted) is gone; the agent and ingest see their connections drop."""
        proc = self.broker.proc
        assert proc is not None
        proc.kill()
        proc.wait()
        self.broker.proc = None

    def freeze_worker(self, index: int) -> None:
        """SIGSTOP ingest worker ``index``: it keeps its connection and what it received,
        and does nothing (a stalled process; it is killed -9 or thawed afterwards)."""
        os.kill(self.workers.procs[index].pid, signal.SIGSTOP)

    def thaw_worker(self, index: int) -> None:
        os.kill(self.workers.procs[index].pid, signal.SIGCONT)

    async def recover(self) -> None:
        """Before a scenario: every process up, the link whole, no session open — so one
        scenario's failure does not fail the next ones too."""
        if self.broker.proc is None or self.broker.proc.poll() is not None:
            self.broker.start()
        for index, proc in list(self.workers.procs.items()):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
            else:
                self.workers.start(index)
        port = self.broker.tls_port
        assert port is not None
        self.ns.restore(port)
        with contextlib.suppress(RuntimeError):
            self.ns.heal(port)
        self.step_clock(0)
        if self.agent is None or self.agent.returncode is not None:
            await self.start_agent()
        if self.relay_closed():
            await self.control({"cmd": "stop", "connector": 1})
        for charged in self.charged:
            if charged.after_wh < 0:  # left open by a failed scenario: stopped above
                charged.after_wh = self.meter_wh()
        await wait_for(self.device_online, "the device online")

    async def device_online(self) -> bool:
        online = await self.pg.fetchval("SELECT online FROM devices WHERE id = $1", self.device_id)
        return bool(online)

    async def telemetry_rows(self) -> int:
        count = await self.pg.fetchval(
            "SELECT count(*) FROM telemetry WHERE device_id = $1", self.device_id
        )
        return int(count)

    def meter_wh(self) -> int:
        """The simulator's import register, as any Modbus client would decode it."""
        return register_wh(self.sim)

    def relay_closed(self) -> bool:
        return bool(self.sim.site.relay_closed)

    async def pay_walkup(self) -> tuple[str, int]:
        """The driver prepays a walk-up with the dummy's succeeding card."""
        body = {"charger_id": self.charger_id, "connector": 1, "energy_wh": PREPAID_WH}
        opened = await self.http.post("/payments", json=body, headers=self.driver.headers)
        assert opened.status_code == 201, opened.text
        paid = await self.http.post(
            f"/payments/{opened.json()['id']}/verify",
            json={"card_number": CARD_SUCCEEDS},
            headers=self.driver.headers,
        )
        assert paid.status_code == 200, paid.text
        return str(paid.json()["id"]), int(paid.json()["amount_paise"])

    async def connector_status(self) -> str:
        status = await self.control({"cmd": "status"})
        return str(status["connectors"][0]["status"])

    async def replug(self) -> None:
        """The last driver unplugged, the next plugs in: the connector is Available again
        (after a session it stays Finishing while the car is still plugged in)."""
        if await self.connector_status() == "Available":
            return
        self.sim.unplug()

        async def available() -> bool:
            return await self.connector_status() == "Available"

        await wait_for(available, "the connector Available after the car was unplugged")
        self.sim.plug("7.4kw", soc=0.05, capacity_wh=200_000.0)

    async def unlock(self) -> Charged:
        """Pay, unlock through the API (the agent closes the relay); returns the session
        with the meter's register taken while the relay was still open."""
        assert not self.relay_closed()
        await self.replug()
        payment_id, prepaid = await self.pay_walkup()
        before = self.meter_wh()
        answer = await self.http.post(
            f"/chargers/{self.charger_id}/sessions",
            json={"connector": 1},
            headers=self.driver.headers,
        )
        assert answer.status_code == 201, answer.text
        assert self.relay_closed()
        charged = Charged(answer.json()["session_id"], before, -1, payment_id, prepaid)
        self.charged.append(charged)
        return charged

    async def energy_flows(self, charged: Charged, wh: int) -> None:
        async def flowed() -> bool:
            return self.meter_wh() >= charged.before_wh + wh

        await wait_for(flowed, f"{wh} Wh through the meter")

    async def stop_online(self, charged: Charged) -> None:
        stop = await self.http.post(
            f"/sessions/{charged.device_session_id}/stop", headers=self.driver.headers
        )
        assert stop.status_code == 202, stop.text
        self.stopped(charged)

    async def stop_at_charger(self, charged: Charged) -> None:
        """The driver stops at the charger (the control socket, as the stop button does):
        works with the cloud link down."""
        assert (await self.control({"cmd": "stop", "connector": 1}))["ok"]
        self.stopped(charged)

    def stopped(self, charged: Charged) -> None:
        assert not self.relay_closed(), "the relay is still closed after the stop"
        charged.after_wh = self.meter_wh()

    async def settled(self, charged: Charged, *, timeout_s: float = 60.0) -> None:
        async def done() -> bool:
            state = await self.pg.fetchval(
                "SELECT billing_state FROM sessions WHERE device_session_id = $1",
                charged.device_session_id,
            )
            return bool(state == "settled")

        await wait_for(done, f"session {charged.device_session_id} settled", timeout_s=timeout_s)

        async def refunded() -> bool:
            status = await self.pg.fetchval(
                "SELECT status FROM payments WHERE id = $1", charged.payment_id
            )
            return status in {"partially_refunded", "refunded"}

        await wait_for(refunded, "the unused prepayment refunded")

    async def drained(self, *, timeout_s: float = 60.0) -> None:
        """Everything the agent had queued by now acknowledged by the cloud (it keeps
        polling the meter, so newer rows come and go meanwhile)."""
        newest = self._store_rows("SELECT coalesce(max(seq), 0) FROM outbox")[0][0]

        async def acked() -> bool:
            waiting = f"SELECT count(*) FROM outbox WHERE seq <= {int(newest)}"
            return int(self._store_rows(waiting)[0][0]) == 0

        await wait_for(acked, "the agent's outbox to drain", timeout_s=timeout_s)

    # --- the books -------------------------------------------------------------------------

    async def check_books(self) -> dict[str, int]:
        """0 readings or sessions lost, 0 duplicated, each bill the meter's delta; returns
        the figures for the report."""
        await self.drained()
        for charged in self.charged:
            assert charged.after_wh >= 0, "a session was never stopped"
            await self.settled(charged)
        figures = await self._check_readings()
        figures |= await self._check_sessions()
        figures |= await self._check_money()
        return figures

    def _committed(self) -> Counter[tuple[str, datetime]]:
        return Counter(
            (meter_id, datetime.fromisoformat(ts))
            for meter_id, ts in self._store_rows("SELECT meter_id, ts FROM readings")
        )

    async def _arrived(self) -> tuple[set[tuple[str, datetime]], int, list[tuple[Any, ...]]]:
        rows = await self.pg.fetch(
            "SELECT meter_id, ts, quantity, count(*) AS n FROM telemetry WHERE device_id = $1 "
            "GROUP BY meter_id, ts, quantity",
            self.device_id,
        )
        doubled = [(r["meter_id"], r["ts"], r["quantity"], r["n"]) for r in rows if r["n"] != 1]
        return {(r["meter_id"], r["ts"]) for r in rows}, len(rows), doubled

    async def _check_readings(self) -> dict[str, int]:
        # The agent goes on polling the meter: every reading committed up to now must arrive
        # (once), and nothing may arrive that the agent did not commit.
        committed = self._committed()
        assert committed, "the agent committed no readings"
        assert max(committed.values()) == 1, "the agent stored a reading twice"
        lost: set[tuple[str, datetime]] = set()

        async def all_arrived() -> bool:
            nonlocal lost
            lost = set(committed) - (await self._arrived())[0]
            return not lost

        try:
            await wait_for(all_arrived, "every committed reading in the cloud")
        except AssertionError:
            raise AssertionError(
                f"{len(lost)} committed readings never reached the cloud: {sorted(lost)[:5]}"
            ) from None
        arrived, points, doubled = await self._arrived()
        assert not doubled, f"telemetry points stored twice: {doubled[:5]}"
        extra = arrived - set(self._committed())
        assert not extra, f"{len(extra)} readings in the cloud the agent never committed"
        assert await self.pg.fetchval("SELECT count(*) FROM dead_letters") == 0
        return {"readings": len(committed), "telemetry_points": points}

    async def _check_sessions(self) -> dict[str, int]:
        local = {
            sid: (start, stop)
            for sid, start, stop in self._store_rows(
                "SELECT session_id, meter_start_wh, meter_stop_wh FROM sessions"
            )
        }
        rows = await self.pg.fetch(
            "SELECT device_session_id, state, energy_wh, billing_state FROM sessions "
            "WHERE device_id = $1",
            self.device_id,
        )
        cloud = Counter(r["device_session_id"] for r in rows)
        assert max(cloud.values(), default=1) == 1, f"a session twice in the cloud: {cloud}"
        assert set(cloud) == set(local), f"sessions: agent {sorted(local)}, cloud {sorted(cloud)}"
        assert set(cloud) == {c.device_session_id for c in self.charged}
        by_id = {r["device_session_id"]: r for r in rows}
        for charged in self.charged:
            row = by_id[charged.device_session_id]
            delta = charged.after_wh - charged.before_wh
            assert delta > 0
            assert (row["state"], row["billing_state"]) == ("stopped", "settled")
            assert row["energy_wh"] == delta, (
                f"session {charged.device_session_id}: billed {row['energy_wh']} Wh, "
                f"the meter moved {delta} Wh"
            )
            start, stop = local[charged.device_session_id]
            assert (start, stop) == (charged.before_wh, charged.after_wh)
        return {"sessions": len(rows)}

    async def _check_money(self) -> dict[str, int]:
        billed_total = 0
        for charged in self.charged:
            delta = charged.after_wh - charged.before_wh
            (row,) = await self.pg.fetch(
                "SELECT id, amount_paise FROM sessions WHERE device_session_id = $1",
                charged.device_session_id,
            )
            bill = expected_bill(delta)
            assert row["amount_paise"] == bill
            billed_total += bill
            refunds = await self.pg.fetch(
                "SELECT amount_paise, status FROM refunds WHERE payment_id = $1",
                charged.payment_id,
            )
            assert [(r["amount_paise"], r["status"]) for r in refunds] == [
                (charged.prepaid_paise - bill, "processed")
            ]
            invoices = await self.pg.fetch(
                "SELECT kind, total_paise FROM invoices WHERE session_id = $1", row["id"]
            )
            assert [(i["kind"], i["total_paise"]) for i in invoices] == [("invoice", bill)]
            credited = await self.pg.fetchval(
                "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries "
                "WHERE session_id = $1 AND account = $2",
                row["id"],
                host_account(self.host.host_id or ""),
            )
            assert -credited == host_share(delta)
        assert await self.pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
        assert (
            await self.pg.fetchval(
                "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
                driver_account(self.driver.id),
            )
            == 0
        )
        return {"billed_paise": billed_total}
