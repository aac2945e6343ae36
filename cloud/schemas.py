"""Shared bases for HTTP request and response bodies.

Every request body derives from :class:`RequestModel`: a field the API does not know is refused
(422) rather than silently dropped, so a client's typo (``"pricee_paise"``) never reads as
success, and a field sent to the wrong endpoint never smuggles state through a later change.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


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


__all__ = ["Problem", "RequestModel", "problem_responses"]
