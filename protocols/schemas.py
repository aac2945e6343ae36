"""JSON Schema export of every wire message: the contract for non-Python clients.

``python -m protocols.schemas`` writes one file per message kind into ``protocols/schemas/``
(or into the directory given as its only argument); ``tests/protocols/test_schemas.py``
fails when the committed files differ from what the models produce.

The schemas come from :func:`msgspec.json.schema`, adjusted where msgspec's view of a model
is not the wire contract:

* the message itself is the document's root (msgspec puts it under ``$defs`` and refers to
  it), with ``$schema``, ``$id`` and a description naming its topic;
* ``v`` is required: the models default it for code that builds a message, a receiver
  refuses a payload without it;
* patterns end in ``$``: the models anchor with Python's ``\\Z`` (``$`` also matches before
  a final newline there), which ECMA-262 regexes do not have;
* docstrings lose their source indentation.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from protocols.messages import MESSAGE_TYPES, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).parent / "schemas"


def _tidy(node: Any) -> None:
    """ECMA-262 patterns and dedented descriptions, everywhere in ``node`` (in place)."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("\\Z"):
            node["pattern"] = pattern[:-2] + "$"
        description = node.get("description")
        if isinstance(description, str):
            node["description"] = inspect.cleandoc(description)
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def message_schemas() -> dict[str, dict[str, Any]]:
    """``{file name: JSON Schema}`` for every message kind, deterministic."""
    out: dict[str, dict[str, Any]] = {}
    for kind, model in MESSAGE_TYPES.items():
        generated = msgspec.json.schema(model)
        defs: dict[str, Any] = generated.get("$defs", {})
        schema: dict[str, Any] = defs.pop(model.__name__)
        if defs:
            schema["$defs"] = defs
        version = schema["properties"]["v"]
        version.pop("default", None)
        schema["required"] = ["v", *schema["required"]]
        _tidy(schema)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://chargemitra.in/schemas/v{SCHEMA_VERSION}/{kind.value}.json"
        schema["description"] = (
            f"Payload of MQTT topic cm/v1/d/{{device_id}}/{kind.value} "
            f"(schema version {SCHEMA_VERSION}). " + (schema.get("description") or "")
        ).strip()
        out[f"{kind.value}.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in message_schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR
    for written_path in write(target):
        print(written_path)
