"""``python -m cloud.demo``: run the demo city on this machine until Ctrl-C, or play the story.

``make demo`` (deploy/dev/demo.sh) prepares the state directory (deploy/dev/demo_site.py
writes ``site.json``: broker config, TLS, keys, the cloud's environment) and then runs this.
In order, it

1. starts the cloud broker (the project's config), migrates the database and seeds the city
   (``chargemitra-cloud seed-city``: idempotent);
2. starts an ingest worker and the API on ``--api-port`` (default 8000, or
   ``CHARGEMITRA_DEMO_API_PORT``), so the QR codes it prints open;
3. starts two simulated sites — one on an RS-485 RTU line (a pseudo-terminal), one on Modbus
   TCP — each with an EV plugged in, and a :class:`~cloud.demo.link.LinkRelay` per site
   standing in for its uplink to the broker;
4. pairs an agent with each site's charger through the real flow (the host signs in, asks
   ``POST /chargers/{id}/pairing-code``, ``chargemitra-agent provision`` claims it) unless
   the one paired on an earlier run is still the charger's device, and starts it;
5. prints the URLs and a short guided script; then waits for Ctrl-C (or SIGTERM), reading
   ``drop tcp|rtu``, ``restore tcp|rtu`` and ``story`` from the terminal meanwhile — or,
   with ``--scenario auto``, plays :func:`cloud.demo.story.play_story` on the TCP site and
   exits 0 when the receipt is printed (1 when a step did not happen).

Every process it starts runs in its own process group and is stopped (SIGTERM, then SIGKILL
after :data:`STOP_GRACE_S`) in reverse order on the way out, whatever the reason; should the
demo itself be killed outright, the kernel sends each of them SIGTERM (PR_SET_PDEATHSIG).

The cloud never imports the agent or the simulator: they run as their own commands here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cloud.demo.city import DEMO_SITES, DRIVER_EMAIL, HOST_EMAIL, PLACES
from cloud.demo.link import LinkRelay
from cloud.demo.story import SimControl, StoryFailed, play_story
from cloud.pg import close, connect
from cloud.settings import DbSettings

DEFAULT_API_PORT = 8000
STOP_GRACE_S = 10.0
START_TIMEOUT_S = 60.0
HOST_PASSWORD = "host123"  # noqa: S105 -- the brief's published demo password
DRIVER_PASSWORD = "renter123"  # noqa: S105 -- the brief's published demo password
BIN = Path(sys.executable).parent


#: prctl(2) option: the signal a child gets when the process that started it dies.
PR_SET_PDEATHSIG = 1


def _die_with_the_demo() -> None:
    """In each child before it runs (Linux): SIGTERM it when the demo dies, even by SIGKILL,
    which leaves no chance to stop the children in order. Their own process groups keep a
    terminal's Ctrl-C from reaching them first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


class DemoError(RuntimeError):
    """The demo could not start (the message says what to do)."""


@dataclass
class Part:
    name: str
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None] | None = None


@dataclass
class Supervisor:
    """Child processes, each in its own process group, stopped in reverse order."""

    parts: list[Part] = field(default_factory=list)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(
        self, name: str, *argv: str, env: dict[str, str] | None = None, first_line: bool = False
    ) -> str | None:
        """Start ``argv``; its output goes to our stderr prefixed ``[name]``. With
        ``first_line``, return its first stdout line (the simulator's endpoints) first."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_the_demo,
        )
        part = Part(name, proc)
        self.parts.append(part)
        line: str | None = None
        if first_line:
            assert proc.stdout is not None
            raw = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            if not raw:
                raise DemoError(f"{name} exited before it said where it listens")
            line = raw.decode()
        part.pump = asyncio.create_task(self._pump(part), name=f"pump-{name}")
        return line

    async def _pump(self, part: Part) -> None:
        assert part.proc.stdout is not None
        while raw := await part.proc.stdout.readline():
            sys.stderr.write(f"[{part.name}] {raw.decode(errors='replace')}")
        await part.proc.wait()
        self.exited.set()

    def dead(self) -> list[Part]:
        return [p for p in self.parts if p.proc.returncode is not None]

    async def stop_all(self) -> None:
        for part in reversed(self.parts):
            await _stop(part)
        self.parts.clear()


async def _stop(part: Part) -> None:
    if part.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(part.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(part.proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(part.proc.pid, signal.SIGKILL)
            await part.proc.wait()
    # Anything the part left behind in its group (it should have none) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(part.proc.pid, signal.SIGKILL)
    if part.pump is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await part.pump


def say(text: str) -> None:
    print(text, flush=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server binds: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _wait_port(port: int, sup: Supervisor, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if sup.dead():
                raise DemoError(f"{sup.dead()[0].name} exited while waiting for {what}") from None
            if asyncio.get_running_loop().time() > deadline:
                raise DemoError(f"{what} did not listen on {port}") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


async def _run(argv: Sequence[str], env: dict[str, str], what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_the_demo,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DemoError(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return out.decode()


def _agent_toml(site_dir: Path, endpoints: dict[str, Any], transport: str) -> Path:
    """The installer's agent.toml for one site (provisioning adds cloud.toml beside it)."""
    if transport == "tcp":
        host, port = endpoints["tcp"].rsplit(":", 1)
        link = f'{{ transport = "tcp", host = "{host}", port = {port} }}'
        poll = 1.0
    else:
        link = f'{{ transport = "rtu", port = "{endpoints["serial"]}", baud = 9600 }}'
        poll = 2.0
    path = site_dir / "agent.toml"
    path.write_text(f"""# make demo's {transport} site, written by cloud/demo/runner.py each start
# (the simulator's pseudo-terminals change).
device_id = "unprovisioned"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = {poll}
link = {link}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "modbus-coil", unit_id = 2, coil = 0, link = {link} }}

[store]
path = "{site_dir / "agent.db"}"

[sessions]
progress_interval_s = 5

[clock]
trust = "always"

[control]
socket_path = "{site_dir / "agent.sock"}"

[[inputs.hid]]
device = "{endpoints["keys"]}"
kind = "keypad"
connector = 1

[mqtt]
keepalive_s = 5
status_interval_s = 2
""")
    return path


def _point_at(overlay: Path, port: int) -> None:
    """Send the site's agent through its own relay: the cloud hands every device the same
    broker URL, so the demo rewrites the port of each site's uplink after provisioning."""
    overlay.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", overlay.read_text()))


@dataclass
class Site:
    transport: str
    name: str
    charger_id: str
    qr_code: str
    lat: float
    lon: float
    relay: LinkRelay
    control: str = ""
    device_id: str = ""


@dataclass
class Demo:
    api_url: str
    db_url: str
    sites: dict[str, Site]
    sup: Supervisor


async def _login(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    answer = await http.post("/auth/login", json={"email": email, "password": password})
    if answer.status_code != 200:
        raise DemoError(f"{email} could not sign in: {answer.status_code} {answer.text}")
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def _pair(
    http: httpx.AsyncClient,
    host: dict[str, str],
    site: Site,
    config: Path,
    *,
    site_json: dict[str, Any],
    env: dict[str, str],
) -> None:
    """Pair the site's agent unless its earlier pairing still holds the charger."""
    overlay = config.parent / "cloud.toml"
    answer = await http.get(f"/host/chargers/{site.charger_id}", headers=host)
    if answer.status_code != 200:
        raise DemoError(f"the host's view of {site.name}: {answer.status_code} {answer.text}")
    view = answer.json()
    if overlay.exists():
        match = re.search(r'(?m)^device_id = "([^"]+)"$', overlay.read_text())
        if match and view.get("device_id") == match.group(1):
            site.device_id = match.group(1)
            _point_at(overlay, site.relay.port)
            return
    issued = await http.post(f"/chargers/{site.charger_id}/pairing-code", headers=host)
    if issued.status_code != 201:
        raise DemoError(f"pairing code for {site.name}: {issued.status_code} {issued.text}")
    await _run(
        [
            str(BIN / "chargemitra-agent"),
            "provision",
            "--code",
            issued.json()["code"],
            "--cloud",
            str(http.base_url).rstrip("/"),
            "--ca-file",
            site_json["ca_file"],
            "--config",
            str(config),
        ],
        env,
        f"chargemitra-agent provision ({site.name})",
    )
    match = re.search(r'(?m)^device_id = "([^"]+)"$', overlay.read_text())
    assert match is not None  # provision writes it
    site.device_id = match.group(1)
    _point_at(overlay, site.relay.port)


async def _online(http: httpx.AsyncClient, site: Site, sup: Supervisor) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        view = (await http.get(f"/chargers/{site.charger_id}")).json()
        if view["status"]["online"]:
            return
        if sup.dead():
            raise DemoError(f"{sup.dead()[0].name} exited before {site.name} came online")
        if asyncio.get_running_loop().time() > deadline:
            raise DemoError(f"{site.name} did not come online")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def running_demo(site_json: dict[str, Any], api_port: int) -> AsyncIterator[Demo]:
    """Everything up and both agents online; everything stopped on exit."""
    state = Path(site_json["state"])
    if not _port_free(api_port):
        raise DemoError(
            f"port {api_port} is taken: stop what listens there, or choose another with "
            f"CHARGEMITRA_DEMO_API_PORT=8001 make demo"
        )
    api_url = f"http://127.0.0.1:{api_port}"
    async with AsyncExitStack() as stack:
        sup = Supervisor()
        stack.push_async_callback(sup.stop_all)
        await sup.start("broker", "/usr/sbin/mosquitto", "-c", site_json["broker_conf"])
        await _wait_port(site_json["broker_tls_port"], sup, "the broker")
        relays = {
            t: await stack.enter_async_context(LinkRelay(site_json["broker_tls_port"]))
            for _, _, t in DEMO_SITES
        }
        env = (
            dict(os.environ)
            | site_json["cloud_env"]
            | {
                "CHARGEMITRA_APP_PUBLIC_BASE_URL": api_url,
                "CHARGEMITRA_MQTT_PUBLIC_URL": f"mqtts://127.0.0.1:{relays['tcp'].port}",
                # Sessions settle within a second or two of syncing (the demo waits for it).
                "CHARGEMITRA_BILLING_SETTLE_INTERVAL_S": "1",
            }
        )
        cloud = str(BIN / "chargemitra-cloud")
        say("[demo] migrating the database and seeding the city (a second run adds nothing)")
        await _run([cloud, "db", "upgrade"], env, "chargemitra-cloud db upgrade")
        city = json.loads(await _run([cloud, "seed-city", "--json"], env, "seed-city"))
        await sup.start("ingest", cloud, "ingest", env=env)
        api_env = env | {
            "CHARGEMITRA_MQTT_USERNAME": "cloud-api",
            "CHARGEMITRA_MQTT_PASSWORD": site_json["api_mqtt_password"],
        }
        await sup.start(
            "api", cloud, "serve", "--host", "127.0.0.1", "--port", str(api_port), env=api_env
        )
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url, timeout=30))
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    break
            if sup.dead() or asyncio.get_running_loop().time() > deadline:
                raise DemoError("the API did not become ready (see [api] above)")
            await asyncio.sleep(0.2)

        host = await _login(http, HOST_EMAIL, HOST_PASSWORD)
        sites: dict[str, Site] = {}
        for (name, place_index, transport), charger_id in zip(
            DEMO_SITES, city["demo_charger_ids"], strict=True
        ):
            view = (await http.get(f"/chargers/{charger_id}")).json()
            place = PLACES[place_index]
            site = Site(
                transport,
                name,
                charger_id,
                view["qr_code"],
                place.lat,
                place.lon,
                relays[transport],
            )
            sites[transport] = site
            site_dir = state / "sites" / transport
            site_dir.mkdir(parents=True, exist_ok=True)
            sim_args = (
                ["--tcp", "127.0.0.1:0", "--no-serial"] if transport == "tcp" else ["--serial"]
            )
            line = await sup.start(
                f"sim-{transport}",
                str(BIN / "chargemitra-sim"),
                "site",
                *sim_args,
                "--no-rfid",
                "--control",
                "127.0.0.1:0",
                "--state",
                str(site_dir / "sim.json"),
                "--plugged",
                "7.4kw",
                env=env,
                first_line=True,
            )
            assert line is not None
            endpoints = json.loads(line)
            site.control = endpoints["control"]
            config = _agent_toml(site_dir, endpoints, transport)
            await _pair(http, host, site, config, site_json=site_json, env=env)
            await sup.start(
                f"agent-{transport}",
                str(BIN / "chargemitra-agent"),
                "run",
                "--config",
                str(config),
                env=env,
            )
        for site in sites.values():
            await _online(http, site, sup)
        yield Demo(api_url=api_url, db_url=site_json["db_url"], sites=sites, sup=sup)


def guide(demo: Demo) -> str:
    tcp, rtu = demo.sites["tcp"], demo.sites["rtu"]
    u = demo.api_url
    return f"""
ChargeMitra demo city is running.
  API          {u}/docs          health {u}/readyz
  sign in      {u}/app/signin
  accounts     renter@example.com / renter123 (driver), host@example.com / host123 (host),
               admin@chargemitra.com / admin123 (admin); every other seeded driver
               (driver001@demo.chargemitra.in ...) uses renter123, every host host123.
  city         10 hosts, 50 chargers in 10 metros, 100 drivers, 200 past bookings
  sites        {tcp.name}: QR {u}/c/{tcp.qr_code}
               {rtu.name}: QR {u}/c/{rtu.qr_code}
  simulators   {BIN / "chargemitra-sim"} --control {tcp.control} state   (TCP site)
               {BIN / "chargemitra-sim"} --control {rtu.control} state   (RTU site)

Try this:
  1. Sign in as the driver and search near Koramangala (list and map):
     {u}/app/search?lat={tcp.lat}&lon={tcp.lon}&radius_km=5
  2. Open the TCP site's QR URL above (what a phone opens on the sticker), sign in as the
     driver, pay with test card 4111 1111 1111 1111 and unlock: the relay closes.
  3. Type `drop tcp` here and Enter: the site's uplink goes down; the charger stays on
     (watch the simulator's meter), the cloud shows it offline.
  4. Type `restore tcp`: the session syncs; stop it from the page and open the receipt.
  5. As the host, see both sites online and their earnings: {u}/app/host
     As the admin, the platform's listings, KYC, disputes and money: {u}/app/admin
  `story` plays the whole story unattended; Ctrl-C stops everything.
"""


async def _console(demo: Demo, stop: asyncio.Event) -> None:
    """Read ``drop SITE``, ``restore SITE`` and ``story`` from the terminal."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        return  # input from a regular file: no commands
    while not stop.is_set() and (raw := await reader.readline()):
        words = raw.decode().split()
        match words:
            case ["drop", name] if name in demo.sites:
                await demo.sites[name].relay.drop()
                say(f"[demo] {name} site's link dropped")
            case ["restore", name] if name in demo.sites:
                await demo.sites[name].relay.restore()
                say(f"[demo] {name} site's link restored")
            case ["story"]:
                try:
                    await story(demo)
                except StoryFailed as exc:
                    say(f"[demo] the story stopped: {exc}")
            case []:
                pass
            case _:
                say("[demo] commands: drop tcp|rtu, restore tcp|rtu, story (Ctrl-C stops)")


async def wait_story_charger_free(db_url: str, charger_id: str) -> None:
    """Wait until no session on ``charger_id`` is running or unbilled: the settle job then
    has completed the booking an earlier story used (cloud/bookings/completion.py), so its
    slot is free for the next story."""
    conn = await connect(DbSettings(url=db_url))
    try:
        # A session an interrupted run left open (its stop still in the agent's outbox)
        # ends first: the agent resends the stop once it is online; then it is billed.
        for _ in range(int(START_TIMEOUT_S / 0.5)):
            if not await conn.fetchval(
                "SELECT count(*) FROM sessions WHERE charger_id = $1 "
                "AND (state = 'active' OR billing_state = 'unbilled')",
                charger_id,
            ):
                break
            await asyncio.sleep(0.5)
    finally:
        await close(conn)


async def story(demo: Demo) -> None:
    site = demo.sites["tcp"]
    await wait_story_charger_free(demo.db_url, site.charger_id)
    await play_story(
        demo.api_url,
        db_url=demo.db_url,
        link=site.relay,
        site=SimControl(site.control),
        charger_id=site.charger_id,
        driver_email=DRIVER_EMAIL,
        password=DRIVER_PASSWORD,
        near=(site.lat, site.lon),
        say=lambda s: say(f"[story] {s}"),
    )


async def main_async(site_json: dict[str, Any], api_port: int, scenario: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def until_stopped(work: asyncio.Future[Any]) -> bool:
        """Wait for ``work`` or a stop signal; True when ``work`` finished."""
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        both: set[asyncio.Future[Any]] = {work, stopper}
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
        stopper.cancel()
        return work in done

    try:
        async with contextlib.AsyncExitStack() as stack:
            opening = asyncio.ensure_future(
                stack.enter_async_context(running_demo(site_json, api_port))
            )
            if not await until_stopped(opening):
                say("[demo] stopped while starting")
                return 0
            demo: Demo = opening.result()  # a failed start raises DemoError here
            say(guide(demo))
            if scenario == "auto":
                played = asyncio.ensure_future(story(demo))
                if not await until_stopped(played):
                    say("[demo] stopped")
                    return 0
                played.result()  # a failed step raises StoryFailed here
                say("[demo] the story ran to the end; stopping everything")
                return 0
            say("[demo] running; press Ctrl-C to stop")
            # The terminal's commands (a pipe works too); its end of input ends only them.
            console = asyncio.ensure_future(_console(demo, stop))
            await until_stopped(asyncio.ensure_future(demo.sup.exited.wait()))
            console.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await console
            dead = demo.sup.dead()
            if dead:
                say(f"[demo] {dead[0].name} exited ({dead[0].proc.returncode}); stopping the rest")
                return 1
            say("[demo] stopping (signal)")
            return 0
    except (DemoError, StoryFailed) as exc:
        say(f"[demo] {exc}")
        return 1
    except httpx.HTTPError as exc:
        say(f"[demo] the API stopped answering ({exc!r}); see [api] above")
        return 1
    finally:
        say("[demo] stopped")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cloud.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--site", type=Path, required=True, help="site.json from deploy/dev/demo_site.py"
    )
    parser.add_argument(
        "--api-port",
        type=int,
        default=int(os.environ.get("CHARGEMITRA_DEMO_API_PORT", DEFAULT_API_PORT)),
        help="the API's port (default 8000, or CHARGEMITRA_DEMO_API_PORT)",
    )
    parser.add_argument(
        "--scenario",
        choices=["auto"],
        default=None,
        help="auto: play the story, print the receipt, exit",
    )
    args = parser.parse_args(argv)
    site_json = json.loads(args.site.read_text())
    sys.exit(asyncio.run(main_async(site_json, args.api_port, args.scenario)))
