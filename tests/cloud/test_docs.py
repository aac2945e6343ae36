"""docs/cloud.md stays true: every setting is documented, nothing undocumented is listed."""

from __future__ import annotations

import re
from pathlib import Path

from cloud.settings import GROUPS, env_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "cloud.md"


def test_every_setting_is_in_the_settings_reference() -> None:
    # The rows of the settings table (test and bench variables are mentioned elsewhere).
    documented = set(re.findall(r"^\| `(CHARGEMITRA_[A-Z0-9_]+)`", DOC.read_text(), re.MULTILINE))
    actual = {env_name(g, f) for g, m in GROUPS.items() for f in m.model_fields}
    assert documented == actual
