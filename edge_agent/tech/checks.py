"""``doctor``'s checks, pure: facts gathered by :mod:`edge_agent.tech.probes` → a verdict
(PASS, WARN, FAIL, SKIP) with one line of detail and one line of remedy.

Every remedy names the next thing a technician should do or type, not a diagnosis only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge_agent.plausible import implausible
from edge_agent.tech.output import EXIT_FAIL, EXIT_OK, EXIT_WARN
from protocols.meters import Quantity

SERVICE = "chargemitra-agent"


class Level(StrEnum):
    PASS = "PASS"  # noqa: S105 -- a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    #: Not applicable here (no serial line, no cloud link configured): counts as a pass.
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str
    remedy: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "level": self.level.value,
            "detail": self.detail,
            "remedy": self.remedy,
        }


def exit_code(checks: Sequence[Check]) -> int:
    """0 when everything passes, 1 with warnings only, 2 with any failure."""
    levels = {c.level for c in checks}
    if Level.FAIL in levels:
        return EXIT_FAIL
    return EXIT_WARN if Level.WARN in levels else EXIT_OK


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- configuration and store ------------------------------------------------------------------


def check_config(path: str, problem: str | None, summary: str) -> Check:
    if problem is not None:
        return Check(
            "config",
            Level.FAIL,
            problem,
            f"fix the file, then `{SERVICE} config validate {path}`",
        )
    return Check("config", Level.PASS, f"{path}: {summary}")


@dataclass(frozen=True, slots=True)
class StoreFacts:
    path: str
    error: str | None = None
    integrity: str = "ok"
    file_bytes: int = 0
    used_bytes: int = 0
    max_bytes: int = 0
    schema_version: int = 0


def check_store(f: StoreFacts) -> Check:
    if f.error is not None:
        if "no store" in f.error:
            return Check(
                "store", Level.WARN, f.error, f"start the agent: sudo systemctl start {SERVICE}"
            )
        return Check(
            "store", Level.FAIL, f.error, f"check the file's owner and permissions (ls -l {f.path})"
        )
    if f.integrity != "ok":
        return Check(
            "store",
            Level.FAIL,
            f"integrity check: {f.integrity}",
            f"stop the agent, keep a copy of {f.path}, and restore or re-create it "
            "(unsent data in it is lost)",
        )
    detail = (
        f"integrity ok, {_mib(f.file_bytes)} on disk, {_mib(f.used_bytes)} in use of "
        f"the {_mib(f.max_bytes)} cap, schema v{f.schema_version}"
    )
    if f.max_bytes and f.used_bytes > 0.9 * f.max_bytes:
        return Check(
            "store",
            Level.WARN,
            detail + " (readings are being thinned)",
            "restore the cloud link so the backlog drains, or raise store.max_bytes",
        )
    return Check("store", Level.PASS, detail)


def check_disk(path: str, free_bytes: int, total_bytes: int, min_free_bytes: int) -> Check:
    detail = f"{_mib(free_bytes)} free of {_mib(total_bytes)} at {path}"
    if free_bytes < min_free_bytes:
        return Check(
            "disk",
            Level.FAIL,
            f"{detail} (below {_mib(min_free_bytes)})",
            "free space: sudo journalctl --vacuum-size=50M, remove old files under /var/log "
            "and /tmp, or lower store.max_bytes",
        )
    if free_bytes < 2 * min_free_bytes:
        return Check(
            "disk",
            Level.WARN,
            f"{detail} (nearly full)",
            "free space before the store runs out: sudo journalctl --vacuum-size=50M",
        )
    return Check("disk", Level.PASS, detail)


# --- serial port ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortFacts:
    port: str
    #: None: usable; else what is wrong ("missing", "permission", "busy", "not a tty", …).
    problem: str | None = None
    detail: str = ""
    hint: str = ""
    #: The port was only looked at (the running agent owns it), not opened.
    checked_by_stat_only: bool = False


def check_port(f: PortFacts) -> Check:
    name = f"port {f.port}"
    if f.problem is None:
        how = (
            "present and accessible (in use by the agent)"
            if f.checked_by_stat_only
            else ("present, opens, not held by another process")
        )
        return Check(name, Level.PASS, how)
    remedies = {
        "missing": "plug the USB RS-485 adapter in (ls /dev/serial/by-id/) and use its "
        "stable /dev/serial/by-id/ path in the config",
        "permission": f.hint or "add the agent's user to the dialout group",
        "busy": "stop the program holding it (fuser -v PORT), or stop the agent before using "
        "the bus directly",
    }
    return Check(name, Level.FAIL, f.detail, remedies.get(f.problem, f.hint or "check the port"))


# --- meters -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterFacts:
    meter_id: str
    model: str
    unit: int
    link: str
    values: Mapping[Quantity, float] | None = None
    error: str | None = None
    #: timeout, exception, garbage, disconnected (the bus's kinds) or None.
    error_kind: str | None = None
    #: Where the unit answered instead, when the configured speed got silence.
    found_at: tuple[int, str] | None = None
    configured_serial: tuple[int, str] | None = None
    #: A port problem makes the meter unreachable: the port check says why.
    port_problem: bool = False
    #: Blocks of the map the meter refused (label, quantities, exception code): read without.
    unavailable: tuple[tuple[str, tuple[str, ...], int], ...] = ()


def check_meter(f: MeterFacts) -> Check:
    name = f"meter {f.meter_id}"
    where = f"{f.model} unit {f.unit} on {f.link}"
    if f.values is not None:
        problems = implausible(f.values)
        if problems:
            return Check(
                name,
                Level.FAIL,
                f"{where}: implausible values: {'; '.join(problems[:3])}",
                f"is it really a {f.model}? check `model` (run `{SERVICE} meter scan`) and the "
                "meter's wiring (voltage inputs, CT direction)",
            )
        power = f.values.get(Quantity.POWER_W)
        energy = f.values.get(Quantity.ENERGY_IMPORT_WH)
        volts = f.values.get(Quantity.VOLTAGE_L1_V)
        parts = [
            f"{volts:.1f} V" if volts is not None else "",
            f"{power:.0f} W" if power is not None else "",
            f"{energy / 1000:.3f} kWh" if energy is not None else "",
        ]
        detail = f"{where}: " + ", ".join(p for p in parts if p)
        if f.unavailable:
            return _partial_meter(name, detail, f)
        return Check(name, Level.PASS, detail)
    error = f.error or "no reading"
    if f.port_problem:
        return Check(name, Level.FAIL, f"{where}: {error}", "fix the serial port first (above)")
    if f.found_at is not None and f.configured_serial is not None:
        baud, parity = f.found_at
        return Check(
            name,
            Level.FAIL,
            f"{where}: silent at {f.configured_serial[0]} {f.configured_serial[1]}, but unit "
            f"{f.unit} answers at {baud} {parity}: wrong baud rate",
            f'set link.baud = {baud} and parity = "{parity}" for this port in the config (or '
            f"set the meter to {f.configured_serial[0]} {f.configured_serial[1]} in its menu)",
        )
    if f.error_kind == "exception":
        return Check(
            name,
            Level.FAIL,
            f"{where}: answers with a Modbus exception: {error}",
            f"the device at unit {f.unit} is not a {f.model}, or not this register map: run "
            f"`{SERVICE} meter scan` and fix `model`/`unit_id`",
        )
    if f.error_kind == "disconnected":
        return Check(
            name,
            Level.FAIL,
            f"{where}: {error}",
            "check the adapter or the network path to the meter",
        )
    return Check(
        name,
        Level.FAIL,
        f"{where}: no answer ({error})",
        "check the meter has power, the RS-485 A/B wires (swap them if unsure) and its unit id "
        f"and baud rate (`{SERVICE} meter scan --port PORT` with the agent stopped)",
    )


def _partial_meter(name: str, detail: str, f: MeterFacts) -> Check:
    """A meter that refuses part of its map: WARN (FAIL when billing or a fail-safe loses a
    quantity it needs), naming each missing block and what it holds."""
    needed = {q.value for q in (Quantity.ENERGY_IMPORT_WH, Quantity.POWER_W, Quantity.CURRENT_L1_A)}
    blocks = "; ".join(
        f"block {label} refused (exception {code}): {', '.join(quantities)} not read"
        for label, quantities, code in f.unavailable
    )
    lost = sorted(needed & {q for _, quantities, _ in f.unavailable for q in quantities})
    remedy = (
        f"this {f.model} lacks these registers (older firmware or another variant): leave them "
        "out with `quantities` in the meter's config, or give it a map of its variant "
        "(`map_file`); the agent asks again every 10 minutes"
    )
    if lost:
        return Check(
            name,
            Level.FAIL,
            f"{detail}; {blocks}; sessions need {', '.join(lost)}",
            f"{remedy}; without {', '.join(lost)} no session can be billed or guarded",
        )
    return Check(name, Level.WARN, f"{detail}; {blocks}", remedy)


# --- relay ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayFacts:
    connector: int
    driver: str
    #: What the relay reads back (None: the driver cannot read it back, or no answer).
    read_closed: bool | None = None
    error: str | None = None
    #: What the relay should be: the agent's command, or open when the agent is stopped.
    expected_closed: bool = False
    power_w: float | None = None
    stuck_power_w: float = 50.0
    fault: str | None = None


def check_relay(f: RelayFacts) -> Check:
    name = f"relay {f.connector}"
    if f.driver == "none":
        return Check(name, Level.SKIP, "no relay configured (metering only)")
    stuck = (
        "the contactor is welded or stuck closed: switch the charger off at its breaker "
        "and replace the contactor, then `chargemitra-agent relay test`"
    )
    if f.fault == "StuckRelay":
        return Check(
            name,
            Level.FAIL,
            "the agent faulted the connector: power flowed after the relay opened",
            stuck,
        )
    if f.fault is not None:
        return Check(
            name,
            Level.FAIL,
            f"the connector is Faulted ({f.fault})",
            f"fix the cause, then `{SERVICE}` clear it (restart the agent or clear_fault)",
        )
    if f.error is not None:
        return Check(
            name,
            Level.FAIL,
            f"{f.driver} relay does not respond: {f.error}",
            "check the relay module's power, its unit id/coil (or GPIO pin) and wiring",
        )
    if f.read_closed is not None and f.read_closed != f.expected_closed:
        want = "closed" if f.expected_closed else "open"
        got = "closed" if f.read_closed else "open"
        return Check(
            name,
            Level.FAIL,
            f"commanded {want}, reads back {got}",
            "check the relay module (coil address, supply)",
        )
    if not f.expected_closed and f.power_w is not None and f.power_w > f.stuck_power_w:
        return Check(name, Level.FAIL, f"relay open but the meter sees {f.power_w:.0f} W", stuck)
    state = "closed" if f.expected_closed else "open"
    seen = "" if f.power_w is None else f", meter {f.power_w:.0f} W"
    return Check(name, Level.PASS, f"{f.driver} responds, {state}{seen}")


# --- clock, cloud, backlog, daemon ------------------------------------------------------------


def check_clock(kernel_synced: bool | None, trust: str, source: str) -> Check:
    if kernel_synced:
        return Check("clock", Level.PASS, f"synchronised ({source})")
    if trust == "always":
        return Check(
            "clock",
            Level.WARN,
            f'not synchronised ({source}), but [clock] trust = "always" (RTC) is configured',
            "make sure the RTC is set (sudo hwclock --show) or enable NTP",
        )
    return Check(
        "clock",
        Level.FAIL,
        f"not synchronised ({source}): unlock tokens and booking PINs are refused, readings "
        "are flagged unsynced",
        "check NTP: timedatectl status; sudo systemctl restart systemd-timesyncd (or chrony); "
        "the site needs internet (UDP 123) once after boot",
    )


@dataclass(frozen=True, slots=True)
class BrokerFacts:
    configured: bool
    where: str = ""
    tls: bool = True
    connected: bool = False
    error: str | None = None
    #: "agent" (the running agent's link) or "probe" (a test connection by the CLI).
    via: str = "probe"


def broker_remedy(error: str, tls: bool) -> str:
    """What to do about a link error, from the error's text (pure)."""
    text = error.lower()
    if any(s in text for s in ("not authorized", "bad user name", "password", "refused us")):
        return (
            "the broker refused our credentials: check mqtt.username and mqtt.password_file, "
            f"or re-provision (`{SERVICE} provision --code CODE --cloud URL`)"
        )
    if any(s in text for s in ("certificate", "ssl", "tls", "handshake")):
        return (
            "TLS failed: check mqtt.ca_file is the broker's CA (and the clock is right: "
            "certificates are time-bound)"
        )
    return (
        "broker unreachable: check the site's internet (ping, 4G signal), DNS, and that "
        f"the broker port is open ({'TLS' if tls else 'plain'}); the outbox keeps data "
        "until it is back"
    )


def check_broker(f: BrokerFacts) -> Check:
    if not f.configured:
        return Check("cloud link", Level.SKIP, "no [mqtt] table: standalone, nothing is sent")
    how = "TLS" if f.tls else "plaintext (loopback)"
    if f.connected:
        who = "the agent is connected" if f.via == "agent" else "test connection accepted"
        return Check("cloud link", Level.PASS, f"{f.where} over {how}: {who}")
    error = f.error or "not connected"
    return Check(
        "cloud link", Level.FAIL, f"{f.where} over {how}: {error}", broker_remedy(error, f.tls)
    )


#: A backlog older than this is worth a look; older than a day, the link is broken.
BACKLOG_WARN_S = 600.0
BACKLOG_FAIL_S = 86_400.0


def check_backlog(rows: int, oldest_age_s: float | None, thinned: int) -> Check:
    if rows == 0:
        detail = "outbox empty" + (f" ({thinned} readings thinned so far)" if thinned else "")
        return Check("backlog", Level.PASS, detail)
    age = oldest_age_s or 0.0
    detail = f"{rows} message(s) queued, oldest {age:.0f} s old"
    if thinned:
        detail += f", {thinned} readings thinned"
    if age >= BACKLOG_FAIL_S:
        return Check(
            "backlog",
            Level.FAIL,
            detail,
            "the cloud link has been down for over a day: fix it (see cloud link)",
        )
    if age >= BACKLOG_WARN_S:
        return Check(
            "backlog",
            Level.WARN,
            detail,
            "the outbox is not draining: check the cloud link; `sync status`",
        )
    return Check("backlog", Level.PASS, detail)


@dataclass(frozen=True, slots=True)
class DaemonFacts:
    answering: bool
    heartbeat_age_s: float | None = None
    heartbeat_pid: int | None = None
    heartbeat_pid_alive: bool = False
    version: str | None = None
    stale_after_s: float = 15.0


def check_daemon(f: DaemonFacts) -> Check:
    logs = f"journalctl -u {SERVICE} -n 50"
    if f.answering:
        if f.heartbeat_age_s is None:
            return Check(
                "agent",
                Level.WARN,
                "answers on its socket but writes no heartbeat",
                f"restart it: sudo systemctl restart {SERVICE}",
            )
        if f.heartbeat_age_s > f.stale_after_s:
            return Check(
                "agent",
                Level.FAIL,
                f"answers, but its heartbeat is {f.heartbeat_age_s:.0f} s old: its loop stalls",
                f"see `{logs}`; sudo systemctl restart {SERVICE}",
            )
        return Check(
            "agent",
            Level.PASS,
            f"running (pid {f.heartbeat_pid}, version "
            f"{f.version}), heartbeat {f.heartbeat_age_s:.0f} s ago",
        )
    if f.heartbeat_pid is not None and not f.heartbeat_pid_alive:
        return Check(
            "agent",
            Level.FAIL,
            f"not running: it died (pid {f.heartbeat_pid} is gone)",
            f"see why: {logs}; then sudo systemctl restart {SERVICE}",
        )
    if f.heartbeat_pid is not None:
        return Check(
            "agent",
            Level.FAIL,
            "its process exists but the control socket does not answer",
            f"see {logs}; sudo systemctl restart {SERVICE}",
        )
    return Check(
        "agent",
        Level.FAIL,
        "not running (no answer on its control socket)",
        f"sudo systemctl start {SERVICE}; if it stops again: {logs}",
    )


def check_versions(versions: Mapping[str, str]) -> Check:
    return Check("versions", Level.PASS, ", ".join(f"{k} {v}" for k, v in versions.items()))


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def to_json(self) -> dict[str, Any]:
        code = exit_code(self.checks)
        return {
            "result": {EXIT_OK: "PASS", EXIT_WARN: "WARN"}.get(code, "FAIL"),
            "exit_code": code,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
        }
