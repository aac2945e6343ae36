"""Every command answers --help; config, logs and auth work from files alone; and the pure
cores (doctor's verdicts, exit codes, scan's model choice, redaction) decide as documented."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.auth.authorizer import MALFORMED_TAG_REASON, MALFORMED_TAG_REF
from edge_agent.auth.decision import AuthVerdict
from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.errors import InputError, Interrupted
from edge_agent.plausible import implausible
from edge_agent.relay.check import Verdict, judge, run_relay_test
from edge_agent.relay.drivers import FakeRelay
from edge_agent.store.db import connect
from edge_agent.tech.authcheck import check
from edge_agent.tech.checks import (
    BrokerFacts,
    Check,
    DaemonFacts,
    Level,
    MeterFacts,
    RelayFacts,
    broker_remedy,
    check_backlog,
    check_broker,
    check_clock,
    check_daemon,
    check_disk,
    check_meter,
    check_relay,
    exit_code,
)
from edge_agent.tech.cmd_config import REDACTED, redact
from edge_agent.tech.handhold import STOP_SIGNALS, stop_signals_set
from edge_agent.tech.scan import ModelFit, best_model, parse_units
from edge_agent.tech.storeview import open_readonly
from protocols.enums import AuthorizationStatus
from protocols.meters import Quantity
from tests.cli.rig import cli, one_line_error

COMMANDS = [
    [],
    ["doctor"],
    ["meter"],
    ["meter", "read"],
    ["meter", "watch"],
    ["meter", "raw"],
    ["meter", "scan"],
    ["relay"],
    ["relay", "on"],
    ["relay", "off"],
    ["relay", "test"],
    ["auth"],
    ["auth", "check"],
    ["auth", "list"],
    ["session"],
    ["session", "list"],
    ["session", "show"],
    ["session", "stop"],
    ["sync"],
    ["sync", "status"],
    ["sync", "flush"],
    ["config"],
    ["config", "validate"],
    ["config", "show"],
    ["provision"],
    ["logs"],
    ["run"],
]


def test_every_command_answers_help_and_offers_json() -> None:
    """In-process through Click (27 interpreter starts would cost 12 s); the installed entry
    point itself is exercised by every other test here."""
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(main, [*command, "--help"], prog_name="chargemitra-agent")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage: chargemitra-agent" in result.output
        groups = ("meter", "relay", "auth", "session", "sync", "config")
        leaf = bool(command) and command[-1] not in groups
        if leaf and command[0] not in ("run", "provision") and command != ["config", "validate"]:
            assert "--json" in result.output, command


async def test_the_installed_entry_point_answers_help() -> None:
    result = await cli("--help")
    assert result.code == 0
    for group in ("doctor", "meter", "relay", "auth", "session", "sync", "logs"):
        assert group in result.stdout


def _config(tmp: Path) -> Path:
    (tmp / "mqtt.password").write_text("s3cret")
    path = tmp / "agent.toml"
    path.write_text(f"""
device_id = "cli-files"
[[meters]]
id = "m1"
model = "sdm120"
link = {{ transport = "tcp", host = "127.0.0.1", port = 1 }}
[[connectors]]
id = 1
meter = "m1"
max_current_a = 16
relay = {{ driver = "none" }}
[store]
path = "{tmp / "agent.db"}"
[control]
socket_path = "{tmp / "agent.sock"}"
[mqtt]
host = "127.0.0.1"
tls = false
password_file = "{tmp / "mqtt.password"}"
""")
    return path


async def test_config_show_and_validate_and_bad_config(tmp_path: Path) -> None:
    config = _config(tmp_path)
    shown = await cli("config", "show", "--json", config=config)
    assert shown.code == 0, shown
    assert shown.json()["mqtt"]["password_file"] == str(tmp_path / "mqtt.password")
    assert "s3cret" not in shown.stdout
    assert (await cli("config", "validate", str(config))).code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "x"\nmeters = 3\n')
    assert "bad.toml" in one_line_error(await cli("config", "show", config=bad))
    assert "bad.toml" in one_line_error(await cli("meter", "read", config=bad))
    doctor = await cli("doctor", "--json", config=bad)
    assert doctor.code == 2
    assert doctor.check("config")["level"] == "FAIL"
    assert "config validate" in doctor.check("config")["remedy"]


async def test_store_commands_without_a_store_are_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for args in (["session", "list"], ["auth", "list"], ["auth", "check", "0A1B2C3D4E"]):
        assert "no store" in one_line_error(await cli(*args, config=config))


async def test_logs_from_a_file_and_without_any_source(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = await cli("logs", "--file", str(log), "-n", "3")
    assert (tail.code, tail.stdout) == (0, "line 97\nline 98\nline 99\n")
    from_env = await cli("logs", "-n", "1", "--json", env={"CHARGEMITRA_AGENT_LOG": str(log)})
    assert from_env.json() == {"line": "line 99"}
    # No log file given and no journalctl on PATH: say what to do.
    nothing = await cli("logs", env={"PATH": str(tmp_path), "CHARGEMITRA_AGENT_LOG": ""})
    assert "--file" in one_line_error(nothing)
    missing = await cli("logs", "--file", str(tmp_path / "nope.log"))
    assert "cannot read log file" in one_line_error(missing)


# --- pure cores --------------------------------------------------------------------------------


def test_exit_code_is_0_all_pass_1_warn_only_2_any_fail() -> None:
    ok, warn, fail = (
        Check("a", Level.PASS, ""),
        Check("b", Level.WARN, ""),
        Check("c", Level.FAIL, ""),
    )
    assert exit_code([ok, Check("s", Level.SKIP, "")]) == 0
    assert exit_code([ok, warn]) == 1
    assert exit_code([ok, warn, fail]) == 2


def test_broker_remedy_names_the_cause() -> None:
    assert "credentials" in broker_remedy("broker x refused us: Not authorized", tls=True)
    assert "credentials" in broker_remedy("refused us: Bad user name or password", tls=True)
    assert "ca_file" in broker_remedy(
        "cannot reach broker: [SSL: CERTIFICATE_VERIFY_FAILED]", tls=True
    )
    assert "unreachable" in broker_remedy("cannot reach broker: [Errno 111] refused", tls=True)
    assert check_broker(BrokerFacts(configured=False)).level is Level.SKIP
    assert (
        check_broker(BrokerFacts(configured=True, where="h:1", connected=True, via="agent")).level
        is Level.PASS
    )


def test_clock_disk_backlog_and_daemon_verdicts() -> None:
    assert check_clock(kernel_synced=True, trust="kernel", source="k").level is Level.PASS
    assert check_clock(kernel_synced=False, trust="always", source="k").level is Level.WARN
    assert check_clock(kernel_synced=False, trust="kernel", source="k").level is Level.FAIL
    assert check_clock(kernel_synced=None, trust="kernel", source="k").level is Level.FAIL
    assert check_disk("/", 10, 100, 50).level is Level.FAIL
    assert check_disk("/", 80, 100, 50).level is Level.WARN
    assert check_disk("/", 100, 200, 50).level is Level.PASS
    assert check_backlog(0, None, 0).level is Level.PASS
    assert check_backlog(10, 60, 0).level is Level.PASS
    assert check_backlog(10, 3600, 0).level is Level.WARN
    assert check_backlog(10, 2 * 86400, 5).level is Level.FAIL
    assert (
        check_daemon(DaemonFacts(answering=True, heartbeat_age_s=2.0, heartbeat_pid=42)).level
        is Level.PASS
    )
    assert (
        check_daemon(DaemonFacts(answering=True, heartbeat_age_s=60.0, heartbeat_pid=42)).level
        is Level.FAIL
    )
    assert (
        "died"
        in check_daemon(DaemonFacts(answering=False, heartbeat_age_s=99.0, heartbeat_pid=42)).detail
    )
    assert check_daemon(DaemonFacts(answering=False)).level is Level.FAIL


def test_meter_and_relay_verdicts() -> None:
    good = {
        Quantity.VOLTAGE_L1_V: 231.0,
        Quantity.POWER_W: 0.0,
        Quantity.FREQUENCY_HZ: 50.0,
        Quantity.ENERGY_IMPORT_WH: 1000.0,
    }
    assert check_meter(MeterFacts("m", "sdm630", 1, "p", values=good)).level is Level.PASS
    nonsense = {**good, Quantity.FREQUENCY_HZ: 3.2e9}
    assert "implausible" in check_meter(MeterFacts("m", "sdm630", 1, "p", values=nonsense)).detail
    exc = check_meter(
        MeterFacts("m", "sdm630", 1, "p", error="exception 2", error_kind="exception")
    )
    assert "meter scan" in exc.remedy
    assert check_relay(RelayFacts(1, "none")).level is Level.SKIP
    assert check_relay(RelayFacts(1, "fake", read_closed=False, power_w=3.0)).level is Level.PASS
    stuck = check_relay(RelayFacts(1, "fake", read_closed=False, power_w=7000.0))
    assert (stuck.level, "welded" in stuck.remedy) == (Level.FAIL, True)
    assert check_relay(RelayFacts(1, "fake", fault="StuckRelay")).level is Level.FAIL
    assert check_relay(RelayFacts(1, "fake", read_closed=True)).level is Level.FAIL


def test_plausibility_needs_mains_voltage_and_frequency_in_range() -> None:
    assert implausible({Quantity.VOLTAGE_L1_V: 230.0, Quantity.FREQUENCY_HZ: 50.0}) == []
    assert implausible({Quantity.VOLTAGE_L1_V: 0.0}) == ["no phase carries a mains voltage"]
    assert implausible({Quantity.VOLTAGE_L1_V: 1e30})
    assert implausible({})


def test_relay_test_verdicts() -> None:
    common = {"charging_power_w": 100.0, "stuck_power_w": 50.0}
    assert (
        judge(closed_read=True, open_read=False, power_closed_w=7400.0, power_open_w=0.0, **common)[
            0
        ]
        is Verdict.PASS
    )
    assert (
        judge(closed_read=True, open_read=False, power_closed_w=0.0, power_open_w=0.0, **common)[0]
        is Verdict.NO_POWER
    )
    assert (
        judge(
            closed_read=True, open_read=False, power_closed_w=7400.0, power_open_w=7400.0, **common
        )[0]
        is Verdict.STUCK_CLOSED
    )
    assert (
        judge(closed_read=False, open_read=False, power_closed_w=0.0, power_open_w=0.0, **common)[0]
        is Verdict.NO_READBACK
    )
    assert (
        judge(closed_read=None, open_read=None, power_closed_w=None, power_open_w=None, **common)[0]
        is Verdict.METER_SILENT
    )


@pytest.mark.parametrize("phase", ["closed", "opened"])
async def test_a_relay_test_whose_stop_is_set_opens_the_relay_and_ends_interrupted(
    phase: str,
) -> None:
    """What the CLI's Ctrl-C does to ``relay test`` (its handlers set the test's stop event,
    tech/handhold.py ``stop_signals_set``), in either watch: the watch ends, the relay is
    commanded open, and the test ends with Interrupted -- not a verdict on a watch cut short
    (power still falling after the open would read as a stuck contactor)."""
    relay = FakeRelay()
    stop = asyncio.Event()

    async def power() -> float | None:
        # Closed: no power comes. Opened: power still flowing, as a stuck contactor's would.
        if relay.history == ([True] if phase == "closed" else [True, False]):
            stop.set()  # Ctrl-C
        await asyncio.sleep(0)
        return 0.0 if phase == "closed" else 7400.0

    # A hang guard, not a timing: without the stop event a watch would last the hour.
    async with asyncio.timeout(60):
        with pytest.raises(Interrupted, match="commanded open and reads open"):
            await run_relay_test(
                relay, power, charging_power_w=100, stuck_power_w=50, settle_s=3600, stop=stop
            )
    assert relay.history == [True, False]


async def test_stop_signals_set_the_event_while_the_block_runs_and_then_the_defaults_are_back() -> (
    None
):
    """SIGINT, SIGTERM and SIGHUP set the event while the block runs (no KeyboardInterrupt,
    no cancellation landing mid-command, no end of the process), and only then."""
    # The loop puts Python's defaults back after the block; this process (a pytest-xdist
    # worker) gets back whatever it had.
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    defaults = {signal.SIGINT: signal.default_int_handler}
    try:
        for sig in STOP_SIGNALS:
            stop = asyncio.Event()
            with stop_signals_set(stop):
                # Installed (else the signal below would end this process).
                assert signal.getsignal(sig) not in (before[sig], signal.SIG_DFL)
                os.kill(os.getpid(), sig)
                async with asyncio.timeout(10):
                    await stop.wait()
            assert signal.getsignal(sig) is defaults.get(sig, signal.SIG_DFL)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_scan_prefers_the_largest_plausible_map_and_reports_ties() -> None:
    fits = [
        ModelFit("sdm120", 10),
        ModelFit("sdm72d", 21),
        ModelFit("sdm630", 27),
        ModelFit("abb_b23", 0, ("exception 1",)),
    ]
    assert best_model(fits) == ("sdm630", ["sdm630"])
    assert best_model([ModelFit("a", 5), ModelFit("b", 5)]) == (None, ["a", "b"])
    assert best_model([ModelFit("a", 0)]) == (None, [])
    assert parse_units("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(InputError):
        parse_units("0-9")


async def test_config_show_prints_settings_that_merely_mention_a_secret(tmp_path: Path) -> None:
    """``auth.token_leeway_s`` is seconds, not a token: it prints as set (it printed ***)."""
    config = _config(tmp_path)
    config.write_text(config.read_text() + "[auth]\ntoken_leeway_s = 45\n")
    shown = await cli("config", "show", "--json", config=config)
    assert shown.code == 0, shown
    assert shown.json()["auth"]["token_leeway_s"] == 45
    assert shown.json()["mqtt"]["ack_warn_after_s"] == 300
    assert REDACTED not in shown.stdout  # this configuration holds no secret value at all


def test_redaction_hides_secrets_but_shows_paths_to_secret_files() -> None:
    data = {
        "mqtt": {"password": "x", "password_file": "/etc/p", "host": "h"},
        "auth": {"pin_secret_file": "/etc/s", "token": "t"},
        "list": [{"secret": 1}],
    }
    assert redact(data) == {
        "mqtt": {"password": REDACTED, "password_file": "/etc/p", "host": "h"},
        "auth": {"pin_secret_file": "/etc/s", "token": REDACTED},
        "list": [{"secret": REDACTED}],
    }
    # Secret names, not every key that mentions one.
    named = {
        "token_leeway_s": 30,
        "api_token": "t",
        "private_key": "k",
        "key_file": "/k",
        "public_key_files": ["/a"],
        "pin_secret": "p",
        "passwords_ok": True,
    }
    assert redact(named) == {
        "token_leeway_s": 30,
        "api_token": REDACTED,
        "private_key": REDACTED,
        "key_file": "/k",
        "public_key_files": ["/a"],
        "pin_secret": REDACTED,
        "passwords_ok": True,
    }


def test_the_store_opens_read_only_even_under_a_path_a_uri_would_garble(tmp_path: Path) -> None:
    odd = tmp_path / "site #1?mode=rw%20"
    odd.mkdir()
    connect(odd / "agent.db").close()
    conn = open_readonly(odd / "agent.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
        with pytest.raises(sqlite3.OperationalError, match=r"readonly"):
            conn.execute("INSERT INTO kv (key, value) VALUES ('x', 'y')")
    finally:
        conn.close()


def _auth_check(tmp_path: Path, config: Path, credential: str, kind: str) -> AuthVerdict:
    """``auth check``'s evaluation of ``credential`` over a fresh store, read-only."""
    connect(tmp_path / "agent.db").close()
    settings = load_config(config)
    conn = open_readonly(tmp_path / "agent.db")
    try:
        return check(
            conn,
            settings,
            credential,
            kind=kind,
            connector=1,
            now=datetime.now(UTC),
            clock_synced=True,
            connector_busy=False,
        )
    finally:
        conn.close()


def test_auth_check_words_a_malformed_tag_as_the_agent_does(tmp_path: Path) -> None:
    decision = _auth_check(tmp_path, _config(tmp_path), "not a tag!", "tag")
    assert (decision.reason, decision.ref) == (MALFORMED_TAG_REASON, MALFORMED_TAG_REF)


def test_auth_check_refuses_a_short_pin_secret_as_the_agent_does(tmp_path: Path) -> None:
    """``auth check`` loads keys with the agent's own loader: a PIN secret the agent would
    refuse at start is refused here too, naming the file, instead of giving a verdict."""
    config = _config(tmp_path)
    secret = tmp_path / "pin.secret"
    secret.write_bytes(b"too-short")
    config.write_text(config.read_text() + f'\n[auth]\npin_secret_file = "{secret}"\n')
    with pytest.raises(InputError, match=r"pin_secret_file: .*pin\.secret: fewer than 16"):
        _auth_check(tmp_path, config, "12345678", "pin")
    # A tag check needs no PIN secret: the bad file does not stand in its way.
    tag = _auth_check(tmp_path, config, "04A1B2C3", "tag")
    assert tag.status is AuthorizationStatus.UNKNOWN  # not in the local list or the cache
