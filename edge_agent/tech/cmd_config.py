"""``chargemitra-agent config show``: the effective configuration, secrets redacted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edge_agent.config import settings_to_dict
from edge_agent.tech.output import console, dumps, emit
from edge_agent.tech.selection import settings_from

#: A key names a secret when its last word is one of these (``password``, ``api_token``,
#: ``pin_secret``, ``private_key``): the noun says what the value *is*. A key that merely
#: mentions one (``token_leeway_s`` is seconds, ``pin_secret_file`` a path) is not a secret,
#: and the technician needs to see it.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "credential", "credentials", "apikey"}
)
_SECRET_KEYS = re.compile(r"(^|_)(private|secret|api|access|signing)_key$")
REDACTED = "***"


def is_secret_name(key: str) -> bool:
    """Whether a setting called ``key`` holds a secret value (pure)."""
    name = key.lower().replace("-", "_")
    return name.rsplit("_", 1)[-1] in _SECRET_WORDS or _SECRET_KEYS.search(name) is not None


def redact(data: Any, key: str = "") -> Any:
    """Secrets replaced by ``***`` (pure), by :func:`is_secret_name`. A *path* to a secret
    file is not a secret and stays visible: the technician needs to know which file to
    check."""
    if isinstance(data, dict):
        return {k: redact(v, k) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v, key) for v in data]
    if key and is_secret_name(key) and data is not None:
        return REDACTED
    return data


def show_config(config_file: Path | None, as_json: bool) -> None:
    """Print the effective configuration (cloud.toml merged, defaults filled in)."""
    settings = settings_from(config_file)
    data = redact(settings_to_dict(settings))

    emit(as_json, data, lambda: console().print_json(dumps(data)))
