"""Issue 20, item 3: the demo city (``make demo``: deploy/dev/demo.sh → cloud/demo/runner.py).

One demo run, as a user meets it: it starts (broker, ingest, API, two simulated sites —
Modbus TCP and RS-485 RTU on a pseudo-terminal — with agents paired through the real pairing
flow), prints the guide; the TCP site's QR URL it printed opens in Chromium and shows the
charger online; seeding again adds nothing; the story (cloud/demo/story.py ``play_story``,
the link dropped and restored by typing ``drop tcp`` / ``restore tcp`` on the demo's
terminal) ends with a session billed from the meter, settled, invoiced, its ledger balanced;
Ctrl-C (SIGINT) then stops the demo with status 0 and nothing it started is left running or
listening.

``make demo SCENARIO=auto`` plays the same story, then exits (tests/e2e/ runs it that way).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from cloud.demo.city import DRIVER_EMAIL, PLACES
from cloud.demo.runner import DRIVER_PASSWORD
from cloud.demo.story import SimControl, StoryResult, play_story
from cloud.pg import PgConnection
from tests.support.browser import chromium
from tests.support.cloud_env import REDIS_URL, own_redis_prefix
from tests.support.mosquitto import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: What the city fills: a second seeding must leave every count as it was. (The live sites'
#: readings keep arriving meanwhile: only the history's are counted.)
COUNTED = {
    t: f"SELECT count(*) FROM {t}"
    for t in (
        "users",
        "hosts",
        "chargers",
        "connectors",
        "devices",
        "bookings",
        "sessions",
        "payments",
        "refunds",
        "ledger_entries",
        "reviews",
        "availability_windows",
    )
} | {"telemetry": "SELECT count(*) FROM telemetry WHERE device_id LIKE 'city-%'"}


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc), whatever its process group."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def _counts(pg: PgConnection) -> dict[str, int]:
    return {t: int(await pg.fetchval(query)) for t, query in COUNTED.items()}


async def _read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> str:
    """Lines of the demo's output until one matches ``pattern`` (returned)."""
    while raw := await stream.readline():
        line = raw.decode()
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"the demo ended before printing /{pattern}/:\n{''.join(seen)}")


class TerminalLink:
    """The demo site's uplink, dropped and restored by typing on the demo's terminal."""

    def __init__(
        self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, site: str, seen: list[str]
    ) -> None:
        self.stdin, self.stdout, self.site, self.seen = stdin, stdout, site, seen

    async def _say(self, command: str, answer: str) -> None:
        self.stdin.write(f"{command} {self.site}\n".encode())
        await self.stdin.drain()
        await asyncio.wait_for(_read_until(self.stdout, answer, self.seen), 30)

    async def drop(self) -> None:
        await self._say("drop", f"{self.site} site's link dropped")

    async def restore(self) -> None:
        await self._say("restore", f"{self.site} site's link restored")


def _check_story(result: StoryResult) -> None:
    """The final session, ledger and invoice: billed from the meter, paid, balanced."""
    session, receipt, invoice = result.session, result.receipt, result.invoice
    assert session["state"] == "stopped"
    assert receipt["billing_state"] == "settled"
    # The bill is the meter's delta as the agent read it; the simulator agrees on the stop.
    assert receipt["meter_stop_wh"] == result.meter_stop_wh
    assert receipt["meter_start_wh"] <= result.meter_start_wh
    assert receipt["energy_wh"] == receipt["meter_stop_wh"] - receipt["meter_start_wh"] > 0
    assert session["energy_wh"] == receipt["energy_wh"]
    assert sum(line["amount_paise"] for line in receipt["lines"]) == receipt["total_paise"]
    assert receipt["taxable_paise"] + receipt["gst_paise"] == receipt["total_paise"] > 0
    # Paid before the relay closed; the prepayment captured, the unused part refunded.
    assert receipt["prepaid_paise"] == result.payment["amount_paise"] == receipt["captured_paise"]
    assert receipt["refunded_paise"] == receipt["prepaid_paise"] - receipt["total_paise"]
    assert receipt["due_paise"] == 0
    # The ledger: balanced, the driver billed the total, credited what they paid and got back.
    ledger = result.ledger
    assert sum(e["amount_paise"] for e in ledger) == 0
    sources = {e["source"] for e in ledger}
    assert {"capture", "bill", "refund"} <= sources, sources
    bill = [e for e in ledger if e["source"] == "bill"]
    assert [e["amount_paise"] for e in bill] == [receipt["total_paise"]]
    # The GST invoice of this session, for the billed amount.
    assert invoice["kind"] == "invoice"
    assert invoice["session_id"] == session["id"]
    assert invoice["total_paise"] == receipt["total_paise"]
    assert invoice["sac"] == receipt["sac"] == "998714"


async def test_the_demo_city_opens_its_qr_plays_the_story_and_leaves_nothing_running(
    db_url: str, pg: PgConnection, tmp_path: Path
) -> None:
    state = tmp_path / "demo"
    prepared = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "deploy" / "dev" / "demo_site.py"),
        str(state),
        db_url,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    site = json.loads((await prepared.communicate())[0])
    api_port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "CHARGEMITRA_REDIS_URL": REDIS_URL,
        # The demo claims its agents from 127.0.0.1 (10 claims per 5 minutes per address): a
        # prefix of its own, so the claims of earlier tests in this worker do not count.
        "CHARGEMITRA_REDIS_KEY_PREFIX": own_redis_prefix("demo"),
    }
    log = (tmp_path / "demo.log").open("wb")
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloud.demo",
        "--site",
        str(state / "site.json"),
        "--api-port",
        str(api_port),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    assert demo.stdout is not None
    assert demo.stdin is not None
    seen: list[str] = []
    try:
        await asyncio.wait_for(_read_until(demo.stdout, r"running; press Ctrl-C", seen), 120)
        guide = "".join(seen)
        assert "10 hosts, 50 chargers" in guide
        qr_urls = re.findall(r"QR (http://127\.0\.0\.1:(\d+)/c/[0-9A-Z]{8})", guide)
        assert len(qr_urls) == 2, guide
        assert {int(port) for _, port in qr_urls} == {api_port}
        children = _children(demo.pid)
        assert len(children) >= 7, children  # broker, ingest, API, 2 simulators, 2 agents

        # The QR URL it printed opens: the charger's page, online (its agent is paired).
        async with chromium() as browser:
            page = await browser.new_page()
            answer = await page.goto(qr_urls[0][0])
            assert answer is not None
            assert answer.status == 200
            assert "Koramangala wallbox" in await page.inner_text("body")
            assert await page.inner_text("#online") == "Online"
            await page.close()

        # Seeding again adds nothing.
        before = await _counts(pg)
        assert before["chargers"] == 50
        assert before["bookings"] == 200
        seeded = await asyncio.create_subprocess_exec(
            str(BIN / "chargemitra-cloud"),
            "seed-city",
            "--json",
            env=env | site["cloud_env"],
            stdout=asyncio.subprocess.PIPE,
        )
        again = json.loads((await seeded.communicate())[0])
        assert again["created"] is False
        assert await _counts(pg) == before

        # The story, played from here through the demo's own site: its uplink dropped and
        # restored with the demo's terminal commands, its simulator read over its control.
        control = re.search(r"--control (http://127\.0\.0\.1:\d+) state\s+\(TCP site\)", guide)
        assert control is not None, guide
        code = qr_urls[0][0].rsplit("/", 1)[1]
        charger_id = await pg.fetchval("SELECT id FROM chargers WHERE qr_code = $1", code)
        told: list[str] = []
        result = await asyncio.wait_for(
            play_story(
                f"http://127.0.0.1:{api_port}",
                db_url=db_url,
                link=TerminalLink(demo.stdin, demo.stdout, "tcp", seen),
                site=SimControl(control.group(1)),
                charger_id=charger_id,
                driver_email=DRIVER_EMAIL,
                password=DRIVER_PASSWORD,
                near=(PLACES[0].lat, PLACES[0].lon),
                say=told.append,
            ),
            150,
        )
        assert any("charging continues offline" in line for line in told), told
        _check_story(result)

        # Ctrl-C stops everything it started.
        ports = [api_port, site["broker_port"], site["broker_tls_port"]]
        demo.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.wait(), 60) == 0
        assert [pid for pid in children if _alive(pid)] == []
        assert [p for p in ports if await _listening(p)] == []
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(demo.wait(), 30)
            except TimeoutError:
                demo.kill()
                await demo.wait()
        log.close()
