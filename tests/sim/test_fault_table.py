"""Fault bookkeeping and the control routes' input checks (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_sim.control import BadRequest, route
from firmware_sim.errors import ConfigError
from firmware_sim.faults import FaultKind, FaultTable, make_fault, parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("7", 7), ("1.5 s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10 days", "-5s", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration_s(text)


def test_a_unit_fault_wins_over_a_bus_fault_and_clearing_is_by_kind_and_unit() -> None:
    table = FaultTable()
    table.set(make_fault("exception", exception_code=6))
    table.set(make_fault("exception", unit=3, exception_code=2))
    one = table.find(FaultKind.EXCEPTION, 3)
    other = table.find(FaultKind.EXCEPTION, 4)
    assert one is not None
    assert one.exception_code == 2
    assert other is not None
    assert other.exception_code == 6
    assert table.find(FaultKind.TIMEOUT, 3) is None
    assert len(table.clear(FaultKind.EXCEPTION, unit=3)) == 1
    found = table.find(FaultKind.EXCEPTION, 3)
    assert found is not None
    assert found.exception_code == 6
    assert len(table.clear()) == 1
    assert table.active() == []


def test_faults_expire_on_the_clock() -> None:
    table = FaultTable()
    table.set(make_fault("slow", for_s=5, now_s=100))
    table.set(make_fault("crc"))
    assert table.expire(104.9) == []
    assert [f.kind for f in table.expire(105)] == [FaultKind.SLOW]
    assert [f.kind for f in table.active()] == [FaultKind.CRC]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"unit": 0}, "unit"),
        ({"for_s": 0}, "for_s"),
        ({"exception_code": 0}, "code"),
        ({"turnaround_s": -1}, "turnaround"),
        ({"drop_ratio": 0}, "drop_ratio"),
        ({"overcurrent_ratio": 1.0}, "ratio"),
    ],
)
def test_bad_fault_parameters_name_their_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_fault("timeout", **params)
    assert refused.value.field == field


class Recorder:
    """A control target that records calls (the routes are tested without a simulator)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        return {"ok": "state"}

    def plug(self, profile: str, *, soc: float = 0.2, capacity_wh: float = 40_000.0) -> None:
        self.calls.append(("plug", (profile, soc, capacity_wh)))

    def unplug(self) -> None:
        self.calls.append(("unplug", None))

    def set_relay(self, closed: bool) -> None:
        self.calls.append(("relay", closed))

    def set_fault(self, kind: str, **params: Any) -> dict[str, Any]:
        self.calls.append(("fault", (kind, params)))
        return {"kind": kind}

    def clear_faults(self, kind: str | None = None, unit: int | None = None) -> int:
        self.calls.append(("clear", (kind, unit)))
        return 1

    def tap(self, tag: str) -> None:
        self.calls.append(("tap", tag))

    def keys(self, text: str) -> None:
        self.calls.append(("keys", text))

    def advance(self, seconds: float) -> None:
        self.calls.append(("advance", seconds))


def test_routes_call_the_target() -> None:
    target = Recorder()
    assert route(target, "GET", "/state", {}) == {"ok": "state"}
    route(target, "POST", "/plug", {"profile": "11kw", "soc": 1})
    route(target, "POST", "/relay", {"closed": False})
    route(target, "POST", "/faults", {"kind": "slow", "unit": 2, "turnaround_s": 1})
    route(target, "DELETE", "/faults/slow?unit=2", {})
    route(target, "DELETE", "/faults", {})
    route(target, "POST", "/clock/advance", {"seconds": 60})
    assert target.calls == [
        ("plug", ("11kw", 1.0, 40_000.0)),
        ("relay", False),
        ("fault", ("slow", {"unit": 2, "turnaround_s": 1})),
        ("clear", ("slow", 2)),
        ("clear", (None, None)),
        ("advance", 60.0),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/relay", {"closed": "yes"}, 400),
        ("POST", "/relay", {}, 400),
        ("POST", "/plug", {"soc": True}, 400),
        ("POST", "/clock/advance", {"seconds": "ten"}, 400),
        ("DELETE", "/faults/slow?unit=two", {}, 400),
        ("GET", "/nothing", {}, 404),
        ("PUT", "/state", {}, 404),
    ],
)
def test_bad_requests(method: str, path: str, body: dict[str, Any], status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        route(Recorder(), method, path, body)
    assert refused.value.status == status
