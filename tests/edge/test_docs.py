"""docs/edge.md stays true: its example configuration validates."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from edge_agent.config import ModbusCoilRelay, parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "edge.md"


def test_the_documented_example_configuration_is_valid() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text("utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1
    settings = parse_config(tomllib.loads(blocks[0]), source="docs/edge.md")
    assert settings.device_id == "blr-koramangala-01"
    assert isinstance(settings.connectors[0].relay, ModbusCoilRelay)
    assert settings.inputs.hid[0].kind == "keypad"
