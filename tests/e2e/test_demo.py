"""Acceptance (issue 20, items 3 and 4): ``make demo SCENARIO=auto`` as a user runs it
(deploy/dev/demo.sh: broker, migrations, the seeded city, ingest, the API, two simulated
sites with agents paired through the real flow, the unattended story) exits 0 having printed
the receipt, leaves nothing running, and leaves behind a session, ledger and GST invoice that
agree with each other, with the simulator's meter and with the charger's tariff.

It runs on the test database (emptied first, so the city is seeded from nothing as on a
clean clone), a state directory of its own and a free API port.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings
from tests.support.cloud_env import REDIS_URL, TABLES, migrate_once, own_redis_prefix
from tests.support.mosquitto import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _running_under(state: Path) -> list[str]:
    """Command lines of processes still running that name the demo's state directory."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state) in cmdline:
            left.append(cmdline)
    return left


async def _one(pg: PgConnection, query: str, *args: object) -> Any:
    rows = await pg.fetch(query, *args)
    assert len(rows) == 1, rows
    return rows[0]


async def _play(state: Path, db_url: str) -> str:
    """``make demo SCENARIO=auto``'s script, as the Makefile runs it; its whole output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= {
        "SCENARIO": "auto",
        "CHARGEMITRA_DEMO_API_PORT": str(free_port()),
        "CHARGEMITRA_DEMO_DB_URL": db_url,
        "CHARGEMITRA_DEMO_STATE_DIR": str(state),
        # This run's Redis database, and a key prefix of the demo's own: rate limits live
        # there, and the claims of earlier tests in this worker must not count (a 429 in CI).
        "CHARGEMITRA_REDIS_URL": REDIS_URL,
        "CHARGEMITRA_REDIS_KEY_PREFIX": own_redis_prefix("demo"),
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "deploy" / "dev" / "demo.sh"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(240):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.terminate()  # the runner stops everything it started on SIGTERM
            await proc.wait()
    text = out.decode(errors="replace")
    (state.parent / "demo.log").write_text(text)
    assert proc.returncode == 0, (
        f"make demo SCENARIO=auto exited {proc.returncode}:\n{text[-4000:]}"
    )
    return text


async def test_make_demo_scenario_auto_bills_the_meter_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    db_url = migrate_once()
    pg = await connect(DbSettings(url=db_url))
    try:
        await pg.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        state = tmp_path / "demo-state"
        out = await _play(state, db_url)
        assert "ChargeMitra receipt" in out
        assert "[demo] the story ran to the end" in out
        assert not _running_under(state), "the demo left processes running"
        story = "\n".join(line for line in out.splitlines() if line.startswith("[story]"))
        unlocked = re.search(r"unlocks it: session (\w+), relay closed", story)
        stopped = re.search(r"the driver stops it: relay open, meter at (\d+) Wh", story)
        assert unlocked, story
        assert stopped, story
        device_session_id, meter_after_stop = unlocked.group(1), int(stopped.group(1))
        await _check_books(pg, device_session_id, meter_after_stop)
    finally:
        await close(pg)


async def _check_books(pg: PgConnection, device_session_id: str, meter_after_stop: int) -> None:
    # The session: stopped, settled, billed from the meter's delta; its stop register is the
    # simulator's, read after the relay opened (nothing flows then).
    session = await _one(
        pg, "SELECT * FROM sessions WHERE device_session_id = $1", device_session_id
    )
    assert (session["state"], session["billing_state"]) == ("stopped", "settled")
    assert session["meter_stop_wh"] == meter_after_stop
    energy: int = session["energy_wh"]
    assert energy > 0
    assert energy == meter_after_stop - session["meter_start_wh"]

    # The bill by the charger's tariff, on the GST invoice.
    charger = await _one(
        pg,
        "SELECT pricing_mode, price_per_kwh_paise, session_fee_paise, min_charge_paise "
        "FROM chargers WHERE id = $1",
        session["charger_id"],
    )
    assert charger["pricing_mode"] == "per_kwh"
    energy_paise = (charger["price_per_kwh_paise"] * energy + 500) // 1000
    taxable = max(charger["session_fee_paise"] + energy_paise, charger["min_charge_paise"])
    invoice = await _one(
        pg,
        "SELECT kind, taxable_paise, cgst_paise, sgst_paise, igst_paise, total_paise, sac "
        "FROM invoices WHERE session_id = $1",
        session["id"],
    )
    assert (invoice["kind"], invoice["sac"], invoice["taxable_paise"]) == (
        "invoice",
        "998714",
        taxable,
    )
    # GST at 18 %: IGST for an inter-state supply, else CGST + SGST at 9 % each.
    gst = (
        (taxable * 1800 + 5000) // 10_000
        if invoice["igst_paise"]
        else 2 * ((taxable * 900 + 5000) // 10_000)
    )
    assert invoice["igst_paise"] + invoice["cgst_paise"] + invoice["sgst_paise"] == gst
    total: int = invoice["total_paise"]
    assert total == session["amount_paise"] == taxable + gst

    # The money: the booking's prepayment captured, the rest refunded, the ledger balanced
    # per transaction and in total, the driver owing nothing for it.
    payment = await _one(pg, "SELECT * FROM payments WHERE session_id = $1", session["id"])
    prepaid: int = payment["amount_paise"]
    assert payment["captured_paise"] == prepaid
    refunds = await pg.fetch(
        "SELECT amount_paise, status FROM refunds WHERE payment_id = $1", payment["id"]
    )
    assert [(r["amount_paise"], r["status"]) for r in refunds] == [(prepaid - total, "processed")]
    entries = await pg.fetch(
        "SELECT txn_id, account, amount_paise, source FROM ledger_entries "
        "WHERE session_id = $1 OR payment_id = $2 "
        "OR refund_id IN (SELECT id FROM refunds WHERE payment_id = $2)",
        session["id"],
        payment["id"],
    )
    by_txn: dict[str, int] = defaultdict(int)
    for entry in entries:
        by_txn[entry["txn_id"]] += entry["amount_paise"]
    assert by_txn, "no ledger entries for the session"
    assert all(v == 0 for v in by_txn.values()), entries
    assert {e["source"] for e in entries} >= {"capture", "refund", "bill", "host_earning"}
    driver = f"driver:{payment['user_id']}"
    assert sum(e["amount_paise"] for e in entries if e["account"] == driver) == 0
    assert sum(e["amount_paise"] for e in entries if e["source"] == "bill") == total
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    print(f"\ndemo auto: session {device_session_id} {energy} Wh billed {total} paise")
