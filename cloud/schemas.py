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
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, field_validator

_NUL_REFUSED = "text may not contain the NUL character (U+0000)"


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_nul(item) for item in value)
    return False


def _utc_representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the instant is out of range") from exc
    return value


#: An instant with a UTC offset that has a UTC equivalent (the offset the client sent is kept).
Instant = Annotated[AwareDatetime, AfterValidator(_utc_representable)]
#: A ULID-like id in a path (listings, bookings, photos, sessions): letters and digits only.
PathId = Annotated[str, Path(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")]
#: A device id in a path, as :func:`protocols.ids.validate_device_id` allows it.
DeviceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are refused, and so is text holding NUL."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError(_NUL_REFUSED)
        return value


class Problem(BaseModel):
    """An RFC 9457 problem document, as :mod:`cloud.problems` writes it (for OpenAPI)."""

    # Problems carry the error's fields as extension members.
    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring problem answers, for a route's ``responses=``."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}}
        for status in statuses
    }


__all__ = ["DeviceId", "Instant", "PathId", "Problem", "RequestModel", "problem_responses"]
