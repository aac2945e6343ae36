"""A relay closed by hand is never left unwatched: beside the running agent the connector is
Unavailable while it is closed and the agent opens it on overcurrent, on meter silence and
after ``--hold-s``, then checks it really opened; with the agent stopped, ``relay on`` holds
the relay itself by the same rules (and Ctrl-C or SIGTERM open it), and Ctrl-C during a
relay test still opens the relay. (And the agent's port is refused to `meter scan` under any
of its names.)"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.relay import manual_close
from edge_agent.relay.failsafe import SafetyLimits
from edge_agent.tech import handhold
from firmware_sim.simsite import SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import Quantity
from tests.cli.rig import CLI, TAG, agent_process, cli, one_line_error, sim_site, write_config
from tests.edge.agent_rig import control, seed_local_list, wait_until

LIMITS = SafetyLimits(rating_a=32, overcurrent_hold_s=5, meter_silence_s=3)
GOOD = {Quantity.ENERGY_IMPORT_WH: 1000.0, Quantity.POWER_W: 7000.0, Quantity.CURRENT_L1_A: 30.0}


def _run(
    manual: manual_close.ManualClose, steps: list[tuple[float, dict[Quantity, float] | None]]
) -> list[str | None]:
    """Feed (time, new reading or None) in order; each step's verdict."""
    out = []
    for mono, values in steps:
        heard = mono if values is not None else manual.heard_mono
        manual, why = manual_close.assess(
            manual, mono=mono, heard_mono=heard, values=values, limits=LIMITS
        )
        out.append(why)
    return out


def test_a_hand_closed_relay_stays_closed_while_readings_are_good_and_time_remains() -> None:
    verdicts = _run(manual_close.start(0.0, 60), [(t, dict(GOOD)) for t in range(1, 60)])
    assert verdicts == [None] * 59


def test_a_hand_closed_relay_opens_when_its_time_is_up() -> None:
    verdicts = _run(manual_close.start(0.0, 10), [(t, dict(GOOD)) for t in range(1, 11)])
    assert verdicts[:-1] == [None] * 9
    assert verdicts[-1] is not None
    assert "limit of 10 s" in verdicts[-1]


def test_a_hand_closed_relay_opens_on_meter_silence_counted_from_the_last_new_reading() -> None:
    manual = manual_close.start(0.0, 600)
    # The same (stale) reading offered again is not heard again: silence still grows.
    verdicts = []
    for mono in (1.0, 2.0, 3.0, 4.0, 5.0):
        manual, why = manual_close.assess(
            manual, mono=mono, heard_mono=1.0, values=GOOD, limits=LIMITS
        )
        verdicts.append(why)
    assert verdicts[:3] == [None, None, None]
    assert verdicts[4] is not None
    assert verdicts[4].startswith("MeterFailure")


def test_a_hand_closed_relay_opens_on_sustained_overcurrent_only() -> None:
    over = {**GOOD, Quantity.CURRENT_L1_A: 40.0}
    brief = _run(
        manual_close.start(0.0, 600), [(1, over), (2, over), (3, dict(GOOD)), (4, over), (5, over)]
    )
    assert brief == [None] * 5
    held = _run(manual_close.start(0.0, 600), [(t, over) for t in range(1, 8)])
    assert held[-1] is not None
    assert held[-1].startswith("OverCurrent")


def test_hold_time_is_clamped_to_its_bounds() -> None:
    assert manual_close.start(0.0, 0.01).hold_s == 1.0
    assert manual_close.start(0.0, 1e9).hold_s == manual_close.MAX_HOLD_S


async def _connector(sock: Path) -> dict[str, object]:
    status = await control(sock, cmd="status")
    return dict(status["connectors"][0])


@pytest.mark.integration
@pytest.mark.slow
async def test_the_agent_watches_a_relay_closed_by_hand_and_opens_it(tmp_path: Path) -> None:
    seed_local_list(tmp_path / "agent.db", (TAG,))
    sock = tmp_path / "agent.sock"
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim)
        text = config.read_text().replace("[limits]\n", "[limits]\novercurrent_hold_s = 1.0\n")
        config.write_text(text)
        async with agent_process(config, tmp_path):

            async def relay_open() -> bool:
                return not sim.site.relay_closed

            async def available() -> bool:
                return (await _connector(sock))["status"] == "Available"

            # The agent's port under another name (as /dev/serial/by-id/… names a ttyUSB) is
            # still the agent's: refused as such, before any probe goes out on the line.
            alias = tmp_path / "by-id-adapter"
            alias.symlink_to(sim.endpoints()["serial"])
            scan = await cli("meter", "scan", "--port", str(alias), "--units", "1", config=config)
            assert "in use by the running agent" in one_line_error(scan)

            # 1. Closed by hand: Unavailable (no session can start), opened after --hold-s.
            on = await cli("relay", "on", "--hold-s", "3", "--json", config=config)
            assert (on.code, on.json()["read_closed"], on.json()["hold_s"]) == (0, True, 3.0)
            assert sim.site.relay_closed
            connector = await _connector(sock)
            assert (connector["status"], connector["relay_closed"]) == ("Unavailable", True)
            refused = await control(sock, cmd="start", connector=1, id_tag=TAG)
            assert (refused["ok"], refused["status"]) == (False, "ConcurrentTx")
            doctor = await cli("doctor", "--json", config=config)
            assert doctor.check("relay 1")["level"] == "PASS", doctor.check("relay 1")
            await wait_until(relay_open, timeout_s=20)
            await wait_until(available, timeout_s=10)

            # 2. Overcurrent through a relay closed by hand opens it.
            assert (await cli("relay", "on", config=config)).code == 0
            sim.set_fault("overcurrent", overcurrent_ratio=1.5)  # 48 A on a 32 A connector
            await wait_until(relay_open, timeout_s=20)
            sim.clear_faults()
            await wait_until(available, timeout_s=10)

            # 3. A meter gone silent opens it (nothing could see an overcurrent any more).
            assert (await cli("relay", "on", config=config)).code == 0
            sim.set_fault("timeout", unit=1)
            await wait_until(relay_open, timeout_s=20)
            sim.clear_faults()
            await wait_until(available, timeout_s=10)

            # 4. Opened by hand but welded: power still flows, the connector faults.
            assert (await cli("relay", "on", config=config)).code == 0
            sim.set_fault("welded")
            off = await cli("relay", "off", "--json", config=config)
            assert (off.code, off.json()["read_closed"]) == (0, False)

            async def faulted() -> bool:
                return (await _connector(sock))["status"] == "Faulted"

            await wait_until(faulted, timeout_s=10)
            assert (await _connector(sock))["fault"] == "StuckRelay"
    log = (tmp_path / "agent.log").read_text()
    assert "closed by hand: closed by hand for its limit of 3 s" in log
    assert "closed by hand: OverCurrent" in log
    assert "closed by hand: MeterFailure" in log


@pytest.mark.integration
async def test_ctrl_c_during_a_relay_test_on_the_bus_opens_the_relay(tmp_path: Path) -> None:
    # No EV: the test watches for power for stuck_relay_check_s + 1 s with the relay closed.
    ran = await _while_closed(
        tmp_path,
        ["relay", "test"],
        lambda sim, proc: proc.send_signal(signal.SIGINT),
        plugged=False,
        edit=lambda text: text.replace("stuck_relay_check_s = 0.5", "stuck_relay_check_s = 60"),
    )
    assert not ran.relay_closed_after
    assert "Traceback" not in ran.stderr
    assert ran.code != 0


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str
    #: The simulator's contactor once the command has returned.
    relay_closed_after: bool

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.stdout)
        return data


WhileClosed = Callable[[SimSite, asyncio.subprocess.Process], object]


def _as_at_a_terminal() -> None:
    """Ctrl-C as a technician's terminal delivers it: a suite started as a background job
    (``cmd &`` in a script) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt for the command under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _while_closed(
    tmp_path: Path,
    argv: list[str],
    act: WhileClosed,
    *,
    plugged: bool = True,
    edit: Callable[[str], str] = lambda text: text,
) -> Ran:
    """Run ``chargemitra-agent ARGV`` beside a stopped agent; once the simulator's relay is
    closed, ``act`` (a fault, a signal), then wait for the command."""
    async with sim_site(MeterSpec("sdm630", 1), plugged=plugged) as sim:
        config = write_config(tmp_path, sim)
        config.write_text(edit(config.read_text()))
        proc = await asyncio.create_subprocess_exec(
            str(CLI),
            *argv,
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_as_at_a_terminal,
        )
        try:

            async def closed() -> bool:
                return sim.site.relay_closed

            await wait_until(closed, timeout_s=20)
            act(sim, proc)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return Ran(proc.returncode, out.decode(), err.decode(), sim.site.relay_closed)


async def _hold(tmp_path: Path, hold_s: float, act: WhileClosed) -> Ran:
    """``relay on --json --hold-s HOLD_S`` beside a stopped agent."""
    return await _while_closed(tmp_path, ["relay", "on", "--json", "--hold-s", str(hold_s)], act)


@pytest.mark.integration
async def test_relay_on_without_the_agent_holds_the_relay_for_hold_s_then_opens_it(
    tmp_path: Path,
) -> None:
    held = await _hold(tmp_path, 2, lambda sim, proc: None)
    assert (held.code, held.relay_closed_after) == (0, False), held.stderr
    assert (held.json()["via"], held.json()["read_closed"], held.json()["open_read"]) == (
        "bus",
        True,
        False,
    )
    assert held.json()["tripped"] is False
    assert "limit of 2 s" in str(held.json()["opened_because"])
    assert "holds the relay closed" in held.stderr  # a --json caller is told on stderr


@pytest.mark.integration
async def test_relay_on_without_the_agent_opens_on_meter_silence(tmp_path: Path) -> None:
    held = await _hold(tmp_path, 120, lambda sim, proc: sim.set_fault("timeout", unit=1))
    assert (held.code, held.relay_closed_after) == (2, False), held.stderr
    assert held.json()["tripped"] is True
    assert "MeterFailure" in str(held.json()["opened_because"])


@pytest.mark.integration
@pytest.mark.parametrize(
    "signals",
    [
        [signal.SIGINT],
        [signal.SIGTERM],
        [signal.SIGHUP],
        [signal.SIGINT] * 3,
        [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
    ],
    ids=["ctrl-c", "sigterm", "sighup-ssh-dropped", "ctrl-c-thrice", "one-of-each"],
)
async def test_relay_on_without_the_agent_opens_on_ctrl_c_sigterm_and_sighup(
    tmp_path: Path, signals: list[signal.Signals]
) -> None:
    """Each ends the hold; repeats while the relay is being opened are ignored (left to their
    defaults, a second one would kill the command with the relay still closed)."""

    def send(sim: SimSite, proc: asyncio.subprocess.Process) -> None:
        for sig in signals:
            proc.send_signal(sig)

    held = await _hold(tmp_path, 120, send)
    assert (held.code, held.relay_closed_after) == (0, False), held.stderr
    assert "Traceback" not in held.stderr
    assert (held.json()["tripped"], held.json()["opened_because"]) == (False, handhold.INTERRUPTED)
    assert held.json()["open_read"] is False
