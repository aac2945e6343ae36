"""Where a msgspec validation error applies: msgspec names the place only in its message text.

Shared by the wire parser (:mod:`protocols.messages`) and the agent's configuration loader,
which both report a refused value by its path.
"""

from __future__ import annotations

import re

import msgspec

#: A path into a document: keys (text) and list indices (integers).
PathParts = tuple[str | int, ...]

# msgspec ends a message with where it applies: " - at `$.readings[0].values`", or for a
# mapping's key " - at `key` in `$.readings[0].values`"; nothing when it is the root.
_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
# Errors about a field of an object name it in the text, and "at" the object.
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]+)`")


def error_location(exc: msgspec.ValidationError) -> tuple[PathParts, str]:
    """``(path, message)`` of ``exc``: ``$.readings[0].values`` becomes
    ``("readings", 0, "values")`` (a mapping's value has no key in msgspec's path: it names
    the mapping); a missing or unknown field is named itself; the root is ``()``. The message
    is msgspec's without its location."""
    text = str(exc)
    parts: list[str | int] = []
    at = _AT.search(text)
    if at is not None:
        text = text[: at.start()]
        for match in _PATH_PART.finditer(at["path"]):
            key, index = match.groups()
            if key is not None:
                parts.append(key)
            elif index is not None:
                parts.append(int(index))
    named = _NAMED_FIELD.match(text)
    if named is not None:
        parts.append(named[1])
    return tuple(parts), text
