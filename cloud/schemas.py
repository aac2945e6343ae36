"""Shared bases and types for HTTP requests and answers.

Every request body derives from :class:`RequestModel`: a field the API does not know is refused
(422) rather than silently dropped, so a client's typo (``"pricee_paise"``) never reads as
success, and a field sent to the wrong endpoint never smuggles state through a later change.

Input PostgreSQL cannot take is refused here as a 422 naming the field, never met as a
database error (a 500): text with a NUL character (valid JSON, but no ``text`` value holds
U+0000), and instants whose UTC equivalent lies outside Python's years 1-9999
(``0001-01-01T00:00+05:30``: comparing works, converting to UTC for the driver overflows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    Strict,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

_NUL_REFUSED = "text may not contain the NUL character (U+0000)"


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_nul(item) for item in value)
    return False


def _instant_text(value: object) -> object:
    # Only ISO 8601 text: pydantic would read a number as Unix time, which the schema
    # (a date-time string) does not offer.
    if isinstance(value, str | datetime):
        return value
    raise ValueError("an instant is ISO 8601 text with an offset")


def whole_number(value: object) -> object:
    # JSON Schema counts 5.0 as an integer (a number with a zero fractional part), so the
    # API does too; 5.5, "5" and true stay refused (strict below).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _utc_representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the instant is out of range") from exc
    return value


#: An instant with a UTC offset that has a UTC equivalent (the offset the client sent is kept).
Instant = Annotated[
    AwareDatetime, BeforeValidator(_instant_text), AfterValidator(_utc_representable)
]
#: An integer in a request body: 5 and 5.0 (the same integer to JSON Schema), not "5" or true.
WholeNumber = Annotated[int, Strict(), BeforeValidator(whole_number)]
#: What every request string without a pattern of its own is held to (see RequestModel).
NO_NUL_PATTERN = r"^[^\x00]*$"
#: The characters Python's ``str.strip()`` and ``\s`` take for whitespace, spelled out for a
#: pattern: a schema's ``\s`` is read by clients (and schemathesis) as ECMA 262's, which
#: leaves out U+001C-U+001F and U+0085 and adds U+FEFF.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: Text that is not blank, without NUL.
NOT_BLANK_PATTERN = rf"^[^\x00]*[^{WHITESPACE}\x00][^\x00]*$"
#: A ULID-like id in a path (listings, bookings, photos, sessions): letters and digits only.
PathId = Annotated[str, Path(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")]
#: A device id in a path, as :func:`protocols.ids.validate_device_id` allows it.
DeviceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The string schemas a property schema may take (itself, its anyOf arms, its items)."""
    found: list[dict[str, Any]] = []
    if schema.get("type") == "string":
        found.append(schema)
    for arm in schema.get("anyOf", []):
        found.extend(_string_schemas(arm))
    if isinstance(schema.get("items"), dict):
        found.extend(_string_schemas(schema["items"]))
    return found


def _state_rules(schema: dict[str, Any]) -> None:
    """Say in ``schema`` (a request model's) what :class:`RequestModel` enforces."""
    for prop in schema.get("properties", {}).values():
        # null is never a value: an optional field is omitted (drop the anyOf null arm).
        arms = prop.get("anyOf")
        if arms is not None:
            kept = [arm for arm in arms if arm != {"type": "null"}]
            if len(kept) == 1:
                del prop["anyOf"]
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
            if prop.get("default", ...) is None:
                del prop["default"]
        # No NUL: a string with no pattern (nor format) of its own gets one excluding
        # U+0000; the patterns the fields declare exclude it already.
        for text in _string_schemas(prop):
            if "pattern" not in text and "format" not in text and "enum" not in text:
                text["pattern"] = NO_NUL_PATTERN


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are refused, so are null values (an
    optional field is omitted, never null) and text holding NUL.

    The JSON Schema says all of it, and a model states its cross-field rules in JSON Schema
    words (``oneOf``, ``dependentRequired``) in :attr:`schema_rules`; a rule JSON Schema
    cannot say (an order between two fields) is written in the route's description."""

    model_config = ConfigDict(extra="forbid")
    #: JSON Schema keywords added to the model's schema: its cross-field rules.
    schema_rules: ClassVar[dict[str, Any]] = {}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        _state_rules(target)
        target.update(cls.schema_rules)
        return schema

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None:
                    raise ValueError(f"{key} may be omitted but not null")
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError(_NUL_REFUSED)
        return value


class Problem(BaseModel):
    """An RFC 9457 problem document, as :mod:`cloud.problems` writes it
    (``application/problem+json``). Problems carry the error's fields (``entity``, ``key``,
    ``field``, ``retry_after_s`` …) as extension members."""

    model_config = ConfigDict(extra="allow")

    #: A URI naming the kind of problem: ``https://chargemitra.in/problems/{slug}``.
    type: str
    title: str
    status: int
    detail: str


class FieldError(BaseModel):
    """One refused field: where (``body.start``, ``query.lat``) and why."""

    field: str
    message: str


class ValidationProblem(Problem):
    """The 422 problem: the request's shape or values are refused, field by field."""

    errors: list[FieldError]


__all__ = [
    "DeviceId",
    "FieldError",
    "Instant",
    "PathId",
    "Problem",
    "RequestModel",
    "ValidationProblem",
    "WholeNumber",
]
