"""JSON Schema export of every wire message: the contract for non-Python clients.

``python -m protocols.schemas`` writes one file per message kind into ``protocols/schemas/``
(or into the directory given as its only argument); ``tests/protocols/test_schemas.py``
fails when the committed files differ from what the models produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from protocols.messages import MESSAGE_TYPES, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).parent / "schemas"


def message_schemas() -> dict[str, dict[str, Any]]:
    """``{file name: JSON Schema}`` for every message kind, deterministic."""
    out: dict[str, dict[str, Any]] = {}
    for kind, model in MESSAGE_TYPES.items():
        schema = model.model_json_schema(mode="validation")
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
