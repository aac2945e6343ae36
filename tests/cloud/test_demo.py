"""Issue 20, item 3: the demo city (``make demo``: deploy/dev/demo.sh → cloud/demo/runner.py).

One demo run, as a user meets it: it starts (broker, ingest, API, two simulated sites —
Modbus TCP and RS-485 RTU on a pseudo-terminal — with agents paired through the real pairing
flow), prints the guide; the TCP site's QR URL it printed opens in Chromium and shows the
charger online; seeding again adds nothing; ``story`` typed on its terminal plays the story
to a settled, invoiced session with a balanced ledger (cloud/demo/story.py); Ctrl-C (SIGINT)
then stops it with status 0 and nothing it started is left running or listening.

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

from cloud.pg import PgConnection
from tests.cloud.browser import chromium
from tests.cloud.conftest import REDIS_KEY_PREFIX, REDIS_URL
from tests.cloud.mosquitto import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: What the city fills: a second seeding must leave every count as it was. (The live sites'
#: readings keep arriving meanwhile: only the history's are counted.)
COUNTED = {
    t: f"SELECT count(*) FROM {t}"
    for t in ("users", "hosts", "chargers", "connectors", "devices", "bookings", "sessions",
              "payments", "refunds", "ledger_entries", "reviews", "availability_windows")
} | {"telemetry": "SELECT count(*) FROM telemetry WHERE device_id LIKE 'city-%'"}  # fmt: skip


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


async def test_the_demo_city_opens_its_qr_plays_the_story_and_leaves_nothing_running(
    db_url: str, pg: PgConnection, tmp_path: Path
) -> None:
    state = tmp_path / "demo"
    prepared = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "deploy" / "dev" / "demo_site.py"), str(state), db_url,
        env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    site = json.loads((await prepared.communicate())[0])
    api_port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT), "CHARGEMITRA_REDIS_URL": REDIS_URL,
        "CHARGEMITRA_REDIS_KEY_PREFIX": REDIS_KEY_PREFIX,
    }  # fmt: skip
    log = (tmp_path / "demo.log").open("wb")
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloud.demo", "--site", str(state / "site.json"),
        "--api-port", str(api_port), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
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
            str(BIN / "chargemitra-cloud"), "seed-city", "--json",
            env=env | site["cloud_env"], stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        again = json.loads((await seeded.communicate())[0])
        assert again["created"] is False
        assert await _counts(pg) == before

        # The story, typed on the demo's terminal, ends with the receipt.
        demo.stdin.write(b"story\n")
        await demo.stdin.drain()
        await asyncio.wait_for(_read_until(demo.stdout, r"ChargeMitra receipt", seen), 150)
        ledger = await asyncio.wait_for(_read_until(demo.stdout, r"ledger\s+\d+ entries", seen), 10)
        assert "balanced: True" in ledger
        story = "".join(seen)
        assert "charging continues offline" in story
        assert re.search(r"invoice\s+INV/", story), story
        billed = await pg.fetchval(
            "SELECT count(*) FROM sessions WHERE booking_id IN (SELECT id FROM bookings WHERE "
            "note = 'make demo SCENARIO=auto') AND billing_state = 'settled'"
        )
        assert billed == 1

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
