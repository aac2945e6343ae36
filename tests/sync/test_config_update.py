"""A cloud config update is validated against the whole configuration, stored atomically, and
applied at the next start; a bad one changes nothing and lists every problem."""

from __future__ import annotations

import re
import sqlite3
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.auth.authorizer import Credential
from edge_agent.cloud_commands import AgentCommands, load_overrides
from edge_agent.config import AgentSettings, parse_config
from edge_agent.control.messages import Refused, StartAnswer, StatusAnswer
from edge_agent.store.db import connect
from protocols.enums import CommandStatus
from protocols.ids import new_ulid
from protocols.messages import Command, ConfigUpdate, JsonValue

DOCS = Path(__file__).resolve().parents[2] / "docs" / "edge.md"


def example_settings(tmp_path: Path) -> AgentSettings:
    match = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert match is not None
    data = tomllib.loads(match.group(1))
    data["store"] = {"path": str(tmp_path / "agent.db")}
    return parse_config(data)


async def _no_start(credential: Credential, connector: int) -> StartAnswer | Refused:
    raise AssertionError("a config update starts nothing")


def _no_status() -> StatusAnswer:
    raise AssertionError("a config update reads no status")


def config_commands(settings: AgentSettings, conn: sqlite3.Connection) -> AgentCommands:
    """The cloud commands with only what a config update uses: the store and the settings."""
    return AgentCommands(
        conn=conn,
        settings=settings,
        present=_no_start,
        connectors={},
        now=lambda: datetime.now(UTC),
        snapshot=_no_status,
    )


def update(settings: dict[str, JsonValue]) -> Command:
    now = datetime.now(UTC)
    return Command(
        msg_id=new_ulid(),
        device_id="blr-koramangala-01",
        seq=1,
        ts=now,
        clock_synced=True,
        cmd_id=new_ulid(),
        expires_at=now + timedelta(minutes=1),
        action=ConfigUpdate(settings=settings),
    )


async def test_valid_update_is_stored_and_applied_at_next_start(tmp_path: Path) -> None:
    settings = example_settings(tmp_path)
    conn = connect(tmp_path / "agent.db")
    commands = config_commands(settings, conn)
    outcome = await commands.execute(update({"limits": {"overcurrent_hold_s": 3.0}}))
    assert outcome.status is CommandStatus.ACCEPTED
    assert "next start" in outcome.detail
    assert settings.limits.overcurrent_hold_s != 3.0  # the running agent is unchanged
    assert load_overrides(settings, conn).limits.overcurrent_hold_s == 3.0
    # A second update merges with the first.
    await commands.execute(update({"limits": {"overcurrent_ratio": 1.2}}))
    applied = load_overrides(settings, conn)
    assert (applied.limits.overcurrent_hold_s, applied.limits.overcurrent_ratio) == (3.0, 1.2)
    conn.close()


async def test_bad_update_is_rejected_with_every_problem_and_changes_nothing(
    tmp_path: Path,
) -> None:
    settings = example_settings(tmp_path)
    conn = connect(tmp_path / "agent.db")
    commands = config_commands(settings, conn)
    outcome = await commands.execute(
        update({"limits": {"overcurrent_hold_s": -1, "no_such_limit": 5}})
    )
    assert outcome.status is CommandStatus.REJECTED
    problems = outcome.data["problems"]
    assert isinstance(problems, list)
    assert len(problems) == 2
    assert "overcurrent_hold_s" in outcome.detail
    assert load_overrides(settings, conn) is settings
    fixed = await commands.execute(update({"device_id": "someone-else"}))
    assert fixed.status is CommandStatus.REJECTED
    assert "device_id" in fixed.detail
    conn.close()
