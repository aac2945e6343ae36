"""A cloud config update is validated against the whole configuration, stored atomically, and
applied at the next start; a bad one changes nothing and lists every problem."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.app import Agent
from edge_agent.commands import AgentCommands, load_overrides
from edge_agent.config import parse_config
from edge_agent.store.db import connect
from protocols.enums import CommandStatus
from protocols.ids import new_ulid
from protocols.messages import Command, ConfigUpdate, JsonValue

DOCS = Path(__file__).resolve().parents[2] / "docs" / "edge.md"


def example_agent(tmp_path: Path) -> Agent:
    match = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert match is not None
    data = tomllib.loads(match.group(1))
    data["store"] = {"path": str(tmp_path / "agent.db")}
    agent = Agent(parse_config(data))
    agent.conn = connect(tmp_path / "agent.db")
    return agent


def update(settings: dict[str, JsonValue]) -> Command:
    now = datetime.now(UTC)
    return Command(
        msg_id=new_ulid(), device_id="blr-koramangala-01", seq=1, ts=now, clock_synced=True,
        cmd_id=new_ulid(), expires_at=now + timedelta(minutes=1),
        action=ConfigUpdate(settings=settings),
    )  # fmt: skip


async def test_valid_update_is_stored_and_applied_at_next_start(tmp_path: Path) -> None:
    agent = example_agent(tmp_path)
    assert agent.conn is not None
    commands = AgentCommands(agent)
    outcome = await commands.execute(update({"limits": {"overcurrent_hold_s": 3.0}}))
    assert outcome.status is CommandStatus.ACCEPTED
    assert "next start" in outcome.detail
    assert agent.settings.limits.overcurrent_hold_s != 3.0  # the running agent is unchanged
    assert load_overrides(agent.settings, agent.conn).limits.overcurrent_hold_s == 3.0
    # A second update merges with the first.
    await commands.execute(update({"limits": {"overcurrent_ratio": 1.2}}))
    applied = load_overrides(agent.settings, agent.conn)
    assert (applied.limits.overcurrent_hold_s, applied.limits.overcurrent_ratio) == (3.0, 1.2)
    agent.conn.close()


async def test_bad_update_is_rejected_with_every_problem_and_changes_nothing(
    tmp_path: Path,
) -> None:
    agent = example_agent(tmp_path)
    assert agent.conn is not None
    commands = AgentCommands(agent)
    outcome = await commands.execute(
        update({"limits": {"overcurrent_hold_s": -1, "no_such_limit": 5}})
    )
    assert outcome.status is CommandStatus.REJECTED
    problems = outcome.data["problems"]
    assert isinstance(problems, list)
    assert len(problems) == 2
    assert "overcurrent_hold_s" in outcome.detail
    assert load_overrides(agent.settings, agent.conn) is agent.settings
    fixed = await commands.execute(update({"device_id": "someone-else"}))
    assert fixed.status is CommandStatus.REJECTED
    assert "device_id" in fixed.detail
    agent.conn.close()
