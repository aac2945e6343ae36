"""Crash recovery rules: resume only when configured and still valid; else close, billing
from the live register or the stored one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edge_agent.sessions.machine import Session
from edge_agent.sessions.recovery import Close, Resume, plan_recovery
from protocols.enums import CredentialKind
from protocols.ids import new_ulid
from protocols.messages import CredentialRef

from .conftest import T0


def _session(expires_in_s: float | None = 3600) -> Session:
    return Session(
        session_id=new_ulid(),
        connector=1,
        credential=CredentialRef(kind=CredentialKind.TOKEN, ref="jti"),
        started_at=T0,
        started_mono=0.0,
        meter_start_wh=100,
        meter_wh=150,
        max_meter_wh=150,
        auth_expires_at=None if expires_in_s is None else T0 + timedelta(seconds=expires_in_s),
    )


def test_close_mode_closes_with_the_live_value_when_the_meter_answers() -> None:
    plan = plan_recovery(_session(), mode="close", live_meter_wh=170, now=T0, clock_synced=True)
    assert isinstance(plan, Close)
    assert (plan.meter_wh, plan.source) == (170, "live")


def test_close_uses_the_stored_value_when_the_meter_is_silent() -> None:
    plan = plan_recovery(_session(), mode="resume", live_meter_wh=None, now=T0, clock_synced=True)
    assert isinstance(plan, Close)
    assert (plan.meter_wh, plan.source) == (150, "stored")


@pytest.mark.parametrize(
    ("expires_in_s", "synced", "resumes"),
    [(3600, True, True), (None, False, True), (-1, True, False), (3600, False, False)],
)
def test_resume_needs_valid_authorization(
    expires_in_s: float | None, synced: bool, resumes: bool
) -> None:
    plan = plan_recovery(
        _session(expires_in_s), mode="resume", live_meter_wh=160, now=T0, clock_synced=synced
    )
    assert isinstance(plan, Resume) is resumes
