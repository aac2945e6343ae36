"""The OpenAPI document tells the truth: every route declares the problems it can answer.

:func:`install_openapi` builds the document once, and reads every route's dependencies to
add the answers they imply — whichever router the route comes from, so a new router is
covered without doing anything — all as ``application/problem+json`` problem documents
(:mod:`cloud.problems` writes them; :class:`cloud.schemas.Problem` describes them):

- any parameter or body → 422, documented as it really is (:class:`ValidationProblem`:
  a string ``detail`` and ``errors[]``, not FastAPI's ``HTTPValidationError``);
- a JSON body → 400 (a body that is not UTF-8 cannot even be parsed as JSON);
- a bearer token read → 401 (a bad one is never taken for none), and it is a security
  requirement; where no caller is required (:func:`cloud.deps.optional_principal`, or a
  bearer scheme that does not insist) the requirement list includes ``{}``: an anonymous
  request is a valid one;
- a role required (:func:`cloud.deps.require_roles`) → 403;
- an id in the path → 404.

What a route answers beyond that (409, 413, 429, 503, 504 …) it says with
``responses=problems(409, ...)``; rules between fields that JSON Schema cannot state, it
says in its description. The problem schemas are added to the document's components.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPBearer

from cloud.deps import current_principal
from cloud.problems import MEDIA_TYPE
from cloud.schemas import FieldError, Problem, ValidationProblem

_REF = "#/components/schemas/"

#: Why each status can happen, as the document says it.
_WHY: dict[int, str] = {
    400: "Bad request: the body is not UTF-8 or not parseable",
    401: "No access token, or one that is invalid, expired or revoked",
    402: "Payment required: pay the problem's amount_paise first (POST /payments)",
    403: "The caller's roles do not allow this",
    404: "Not found (or not the caller's to see)",
    405: "Method not allowed",
    409: "Conflict with stored state",
    413: "Content too large",
    422: "Invalid request: the problem's errors[] name each field and what is wrong with it",
    429: "Too many attempts: wait Retry-After seconds",
    500: "The server failed; the problem's type says how (details stay in its log)",
    503: "A dependency or the charger is unavailable",
    504: "The charger did not answer in time",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem answers with ``statuses``, for a route's
    ``responses=``."""
    return {status: _problem_response(status) for status in statuses}


def links(status: int, **targets: dict[str, str]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose ``status`` answer names a resource other
    operations take: ``links(201, get_booking={"booking_id": "$response.body#/id"})``. The
    keys are the target operations' ids (their handlers' names); schemathesis' stateful
    phase and client generators follow them."""
    return {
        "responses": {
            str(status): {
                "links": {
                    target: {"operationId": target, "parameters": parameters}
                    for target, parameters in targets.items()
                }
            }
        }
    }


def _problem_response(status: int) -> dict[str, Any]:
    model = ValidationProblem if status == 422 else Problem
    return {
        "description": _WHY.get(status, "Problem"),
        "content": {MEDIA_TYPE: {"schema": {"$ref": _REF + model.__name__}}},
    }


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _is_role_check(call: Callable[..., Any]) -> bool:
    return getattr(call, "__qualname__", "").startswith("require_roles.")


def implied_statuses(route: Any) -> set[int]:
    """The problem statuses ``route`` (an API route, or its context once included) can
    answer because of what it takes: its parameters, body, caller and roles."""
    dependant: Dependant = route.dependant
    calls = set(_calls(dependant))
    implied: set[int] = set()
    extra = route.openapi_extra or {}
    has_params = bool(dependant.path_params or dependant.query_params or dependant.header_params)
    if has_params or route.body_field is not None or "requestBody" in extra:
        implied.add(422)
    if route.body_field is not None:
        implied.add(400)
    if dependant.path_params:
        implied.add(404)
    if any(isinstance(call, HTTPBearer) for call in calls):
        implied.add(401)
    if any(_is_role_check(call) for call in calls):
        implied.add(403)
    return implied


def auth_is_optional(route: Any) -> bool:
    """Whether ``route`` reads a bearer token but serves an anonymous caller too: it never
    demands one (``current_principal``) and its bearer scheme does not insist."""
    calls = set(_calls(route.dependant))
    bearers = [call for call in calls if isinstance(call, HTTPBearer)]
    return (
        bool(bearers)
        and current_principal not in calls
        and not any(bearer.auto_error for bearer in bearers)
    )


def _document(spec: dict[str, Any], routes: list[Any]) -> None:
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = spec["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            # The handler's name: what a generated client calls the operation (FastAPI's
            # default glues the path and method on: login_auth_login_post).
            operation["operationId"] = route.name
            responses = operation.setdefault("responses", {})
            for status in sorted(implied_statuses(route)):
                # Replaces FastAPI's own 422 (HTTPValidationError): not what we answer.
                if status == 422 or str(status) not in responses:
                    responses[str(status)] = _problem_response(status)
            for status, response in responses.items():
                # A problem answer declared without its schema gets the one it has.
                media = response.get("content", {}).get(MEDIA_TYPE)
                if media is not None and "schema" not in media:
                    media["schema"] = _problem_response(int(status))["content"][MEDIA_TYPE][
                        "schema"
                    ]
            if auth_is_optional(route) and {} not in operation.get("security", []):
                # The token is optional: an anonymous request is a valid one.
                operation["security"] = [*operation.get("security", []), {}]


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` build the document with the problem schemas in components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _document(spec, app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            # FastAPI's validation error shapes are answered by no route.
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            for model in (Problem, FieldError, ValidationProblem):
                schema = model.model_json_schema(ref_template=_REF + "{model}")
                schema.pop("$defs", None)
                schemas[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign] # FastAPI's documented override
