"""Every problem of a document msgspec refuses, each at its own path.

msgspec stops at the first error it meets and names its place but not the value found there.
A person fixing a file wants every problem in one round, each with the value they wrote and
what was expected: :func:`every_problem` walks the document beside its type and lets msgspec
judge each part (it stays the only judge of what is valid). Used by the agent's configuration
(edge_agent/config.py); beside :mod:`protocols.validation`, which reads msgspec's path.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from msgspec import inspect

from protocols.validation import PathParts, error_location

#: msgspec.convert bound to the caller's options (strict, hooks): value, type -> object.
Convert = Callable[[object, Any], object]


class RuleError(ValueError):
    """A struct's own rule (``__post_init__``) is broken: which field, what it wants.

    msgspec keeps it as the ``__cause__`` of its ``ValidationError``, so the walk names the
    field itself rather than the whole table.
    """

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: got {value!r}, expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: where (a path into the document), what was there, what was expected."""

    path: PathParts
    value: object
    expected: str


def every_problem(value: object, type_: Any, convert: Convert) -> list[Problem]:
    """Every problem of ``value`` as a ``type_`` (empty when ``convert`` accepts it and it
    holds no inf or nan)."""
    return _problems(value, type_, (), convert)


def has_nonfinite(value: object) -> bool:
    # TOML has inf and nan; msgspec accepts them for a float without bounds. No setting means
    # "infinitely many watts", and nan passes no comparison the fail-safe rules make.
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_nonfinite(v) for v in value)
    return False


def _problems(value: object, type_: Any, path: PathParts, convert: Convert) -> list[Problem]:
    """Every problem of ``value`` as a ``type_``, at ``path`` (empty when it is valid).

    msgspec remains the only judge of what is valid: a value it converts is fine. Where it
    refuses a table or a list, the walk goes down into the keys and items to report each bad
    one by its own path; what is left (a single value, or a table's own rule such as "tls =
    false only to localhost") is reported where msgspec found it.
    """
    error: msgspec.ValidationError | None = None
    if not has_nonfinite(value):
        try:
            convert(value, type_)
        except msgspec.ValidationError as exc:
            error = exc
        else:
            return []
    base = get_args(type_)[0] if get_origin(type_) is Annotated else type_
    origin = get_origin(base)
    found: list[Problem] = []
    if origin is Union or origin is types.UnionType:
        members = [m for m in get_args(base) if m is not type(None)]
        if len(members) == 1 and value is not None:
            return _problems(value, members[0], path, convert)
        if isinstance(value, dict) and all(_tag_of(m) is not None for m in members):
            found = _union_problems(value, members, path, convert)
    elif origin is tuple and isinstance(value, list | tuple):
        item_type = get_args(base)[0]
        found = [
            p
            for i, item in enumerate(value)
            for p in _problems(item, item_type, (*path, i), convert)
        ]
    elif isinstance(base, type) and issubclass(base, msgspec.Struct) and isinstance(value, dict):
        found = _struct_problems(value, base, path, convert)
    return found or [_problem_at(value, type_, path, error)]


def _tag_of(type_: Any) -> str | None:
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        tag = type_.__struct_config__.tag
        return tag if isinstance(tag, str) else None
    return None


def _union_problems(
    value: dict[str, Any], members: list[Any], path: PathParts, convert: Convert
) -> list[Problem]:
    """A tagged union (``link``, ``relay``): the tag picks the table's type, then its keys."""
    tag_field = members[0].__struct_config__.tag_field
    by_tag = {_tag_of(m): m for m in members}
    choices = ", ".join(f'"{t}"' for t in by_tag)
    if tag_field not in value:
        return [Problem((*path, tag_field), None, f"one of {choices} (required)")]
    tag = value[tag_field]
    # A list or table where the tag belongs is not hashable: a bad value like any other.
    member = by_tag.get(tag) if isinstance(tag, str) else None
    if member is None:
        return [Problem((*path, tag_field), value[tag_field], f"one of {choices}")]
    return _problems(value, member, path, convert)


def _struct_problems(
    value: dict[str, Any], cls: type[msgspec.Struct], path: PathParts, convert: Convert
) -> list[Problem]:
    """A table: unknown keys, bad values (each by its own path), then missing keys."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    tag_field = cls.__struct_config__.tag_field
    problems: list[Problem] = []
    for key, item in value.items():
        if key == tag_field:
            continue  # checked by _union_problems
        field = fields.get(key)
        if field is None:
            known = ", ".join(fields)
            problems.append(Problem((*path, key), item, f"no such key here (known: {known})"))
        else:
            problems += _problems(item, field.type, (*path, key), convert)
    for name, field in fields.items():
        if field.required and name not in value:
            expected = f"{describe(field.type)} (required)"
            problems.append(Problem((*path, name), None, expected))
    return problems


def _problem_at(
    value: object, type_: Any, path: PathParts, error: msgspec.ValidationError | None
) -> Problem:
    if error is None:  # it converted, but holds inf or nan
        return Problem(path, value, f"a finite value: {describe(type_)}")
    cause = error.__cause__
    if isinstance(cause, RuleError):
        return Problem((*path, cause.field), cause.value, cause.expected)
    # msgspec says e.g. "Expected `int` >= 1 - at `$.meters[0].unit_id`": only the first
    # bound broken and a type name, not the value found (looked up in the data instead). The
    # walk has usually narrowed the error to this very value (no "at" path left), and then
    # the type itself says it better.
    sub, message = error_location(error)
    if not sub:
        return Problem(path, value, describe(type_))
    return Problem((*path, *sub), _lookup(value, sub), message)


def _lookup(value: object, path: PathParts) -> object:
    """The value the file holds at ``path`` (None where there is none): msgspec names the
    place of an error but not what was found there, which the technician needs to see."""
    for part in path:
        if isinstance(part, int) and isinstance(value, list | tuple) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def describe(type_: Any) -> str:
    """What a field wants, in a technician's words ("an integer from 1 to 247")."""
    return _describe_info(inspect.type_info(type_))


def _describe_info(info: Any) -> str:
    match info:
        case inspect.Metadata():
            description = (info.extra_json_schema or {}).get("description")
            return str(description) if description else _describe_info(info.type)
        case inspect.BoolType():
            return "true or false"
        case inspect.IntType():
            return "an integer" + _bounds(info)
        case inspect.FloatType():
            return "a number" + _bounds(info)
        case inspect.StrType():
            if info.pattern:
                return f"text matching {info.pattern}"
            return "non-empty text" if info.min_length else "text"
        case inspect.LiteralType():
            return "one of " + ", ".join(
                f'"{v}"' if isinstance(v, str) else str(v) for v in info.values
            )
        case inspect.EnumType():
            return "one of " + ", ".join(f'"{m.value}"' for m in info.cls)
        case inspect.CustomType() if info.cls is Path:
            return "a file path (text)"
        case inspect.StructType():
            return "a table"
        case inspect.UnionType():
            members: list[Any] = [m for m in info.types if not isinstance(m, inspect.NoneType)]
            if all(isinstance(m, inspect.StructType) and m.tag is not None for m in members):
                tags = " or ".join(f'"{m.tag}"' for m in members)
                return f"a table with {members[0].tag_field} = {tags}"
            return " or ".join(_describe_info(m) for m in members)
        case inspect.VarTupleType() | inspect.ListType():
            least = f" of at least {info.min_length}" if info.min_length else ""
            return f"a list{least}, each {_describe_info(info.item_type)}"
    return str(info)


def _bounds(info: Any) -> str:
    if info.ge is not None and info.le is not None:
        return f" from {info.ge} to {info.le}"
    low = f">= {info.ge}" if info.ge is not None else f"> {info.gt}" if info.gt is not None else ""
    high = f"<= {info.le}" if info.le is not None else f"< {info.lt}" if info.lt is not None else ""
    both = " and ".join(b for b in (low, high) if b)
    return f" {both}" if both else ""
