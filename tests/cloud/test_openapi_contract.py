"""The OpenAPI document says what the API answers (issue 17), checked on the document itself
and against the app's real answers.

schemathesis (tests/cloud/test_fuzz_api.py) checks the same at random; these tests pin each
promise by name: every error is a problem document of the declared model, the validation 422
is documented as it really is, optional authentication is optional in the document, a 405
lists every method of its path, and the rules the schema can state are in it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.settings import Settings
from tests.support.bookings_fixtures import add_charger
from tests.support.market import Api, add_user

PROBLEM = "#/components/schemas/Problem"
VALIDATION_PROBLEM = "#/components/schemas/ValidationProblem"
#: Routes that serve an anonymous caller and a signed-in one alike (QR images and photos of
#: visible listings; phone verification, which a signed-in caller may also use).
OPTIONAL_AUTH = {
    ("get", "/chargers/{charger_id}/qr.svg"),
    ("get", "/chargers/{charger_id}/qr.png"),
    ("get", "/chargers/{charger_id}/photos/{photo_id}"),
    ("post", "/auth/otp/verify"),
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_answer_is_a_problem_document(spec: dict[str, Any]) -> None:
    wrong = []
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if status.startswith(("2", "3")):
                continue
            content = response.get("content", {})
            expected = VALIDATION_PROBLEM if status == "422" else PROBLEM
            if list(content) != ["application/problem+json"] or content["application/problem+json"][
                "schema"
            ] != {"$ref": expected}:
                wrong.append(f"{method.upper()} {path} {status}: {content}")
    assert not wrong, "\n".join(wrong)


def test_the_validation_422_is_documented_as_answered(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    validation = schemas["ValidationProblem"]
    assert validation["properties"]["detail"] == {"title": "Detail", "type": "string"}
    assert validation["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }
    assert set(validation["required"]) >= {"type", "title", "status", "detail", "errors"}
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in _operations(spec)
        if (operation.get("parameters") or operation.get("requestBody"))
        and "422" not in operation["responses"]
    ]
    assert not missing, missing


def test_each_operation_documents_what_its_inputs_imply(spec: dict[str, Any]) -> None:
    gaps = []
    for method, path, operation in _operations(spec):
        responses = operation["responses"]
        if operation.get("security") and "401" not in responses:
            gaps.append(f"{method.upper()} {path}: a token is read, no 401")
        if "{" in path and "404" not in responses:
            gaps.append(f"{method.upper()} {path}: an id in the path, no 404")
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body and "400" not in responses:
            gaps.append(f"{method.upper()} {path}: a JSON body, no 400 (non-UTF-8 body)")
    assert not gaps, "\n".join(gaps)
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]


def test_every_schema_has_its_own_name(spec: dict[str, Any]) -> None:
    """Two models of one class name get module-path names (``cloud__payouts__schemas__X``),
    which generated clients fail on: every component name is a plain model name."""
    mangled = [name for name in spec["components"]["schemas"] if "__" in name]
    assert mangled == []


def test_optional_authentication_is_declared_optional(spec: dict[str, Any]) -> None:
    optional = {
        (method, path)
        for method, path, operation in _operations(spec)
        if {} in operation.get("security", [])
    }
    assert optional >= OPTIONAL_AUTH
    for method, path in optional:
        assert {"HTTPBearer": []} in spec["paths"][path][method]["security"]


def test_cross_field_and_format_rules_are_in_the_schema(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    login = schemas["LoginRequest"]
    # password plus exactly one of email or phone, and nothing else.
    assert login["additionalProperties"] is False
    assert (login["minProperties"], login["maxProperties"]) == (2, 2)
    assert login["required"] == ["password"]
    assert schemas["MeUpdate"]["dependentRequired"] == {"password": ["current_password"]}
    assert {
        rule["if"]["properties"]["mode"]["const"] for rule in schemas["PricingIn"]["allOf"]
    } == {
        "per_kwh",
        "per_hour",
    }
    assert "pattern" in login["properties"]["phone"]
    assert "pattern" in schemas["ClaimRequest"]["properties"]["code"]
    window = schemas["WindowIn"]["properties"]
    assert window["weekday"] == {"maximum": 6, "minimum": 0, "title": "Weekday", "type": "integer"}
    assert "pattern" in window["opens_at"]
    # No request string admits NUL, and no request field admits null.
    for name, schema in schemas.items():
        for field, prop in schema.get("properties", {}).items():
            if name.endswith(("In", "Request", "Create", "Update", "Body")):
                assert {"type": "null"} not in prop.get("anyOf", []), (name, field)
                if prop.get("type") == "string" and "format" not in prop and "enum" not in prop:
                    assert "pattern" in prop, (name, field)


def _request_bodies(spec: dict[str, Any]) -> set[str]:
    """The component names of every JSON request body."""
    names = set()
    for _, _, operation in _operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref")
        if ref is not None:
            names.add(ref.rsplit("/", 1)[-1])
    return names


def test_every_number_a_request_body_takes_is_bounded(spec: dict[str, Any]) -> None:
    """Money, durations and energies in request bodies carry ``minimum`` and ``maximum``
    (issue 16): pydantic writes ``Field(ge=, le=)`` on an optional annotated integer as
    ``ge``/``le``, which no JSON Schema tool reads (QuoteRequest's did)."""
    schemas = spec["components"]["schemas"]
    bodies = _request_bodies(spec)
    assert {"QuoteRequest", "WalkUpPayment", "BookingExtend"} <= bodies
    for name in bodies:
        for field, prop in schemas[name].get("properties", {}).items():
            for option in prop.get("anyOf", [prop]):
                assert not {"ge", "le", "gt", "lt"} & option.keys(), (name, field)
                if option.get("type") in {"integer", "number"}:
                    assert {"minimum", "maximum"} <= option.keys(), (name, field)
    quote = schemas["QuoteRequest"]["properties"]
    assert (quote["duration_min"]["minimum"], quote["duration_min"]["maximum"]) == (1, 720)
    assert (quote["energy_wh"]["minimum"], quote["energy_wh"]["maximum"]) == (1, 500_000)


def test_created_resources_link_to_the_operations_that_take_them(spec: dict[str, Any]) -> None:
    """Explicit links (followed by schemathesis' stateful phase) name real operations and
    real parameters of theirs."""
    operations = {op["operationId"]: op for _, _, op in _operations(spec)}
    found = 0
    for method, path, operation in _operations(spec):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations[link["operationId"]]
                names = {p["name"] for p in target.get("parameters", [])}
                assert set(link["parameters"]) <= names, (method, path, link)
                found += 1
    assert found >= 10
    assert "get_booking" in spec["paths"]["/bookings"]["post"]["responses"]["201"]["links"]


async def test_a_405_lists_every_method_of_its_path() -> None:
    app = create_app(Settings())  # no lifespan: a 405 needs no database
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path, allowed in {
            "/bookings": "GET, POST",
            "/chargers": "GET, POST",
            "/chargers/X1": "GET, PATCH",
            "/me": "GET, PATCH",
            "/chargers/X1/photos/P1": "DELETE, GET",
        }.items():
            answer = await client.request("OPTIONS", path)
            assert answer.status_code == 405, path
            assert answer.headers["allow"] == allowed, path
            assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.integration
async def test_answers_match_the_rules_the_schema_states(market_api: Api, pg: PgConnection) -> None:
    client = market_api.client
    host = await add_user(pg, market_api.settings, Role.HOST)
    charger = await add_charger(pg, host)
    windows = f"/chargers/{charger.id}/availability"

    # JSON Schema counts 5.0 as an integer; so does the API. 5.5, "5" and true are not.
    whole = {"windows": [{"weekday": 5.0, "opens_at": "08:00", "closes_at": "24:00"}]}
    answer = await client.put(windows, json=whole, headers=host.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["windows"][0]["weekday"] == 5
    for weekday in (5.5, "5", True):
        bad = {"windows": [{"weekday": weekday, "opens_at": "08:00", "closes_at": "20:00"}]}
        refused = await client.put(windows, json=bad, headers=host.headers)
        assert refused.status_code == 422, weekday
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"], refused.json()

    # A time is HH:MM text, as the pattern says, not a number of seconds.
    numeric = {"windows": [{"weekday": 0, "opens_at": "00:00", "closes_at": 0}]}
    assert (await client.put(windows, json=numeric, headers=host.headers)).status_code == 422

    # null is never a value, as the schema says (an optional field is omitted).
    login = {"email": None, "phone": "+919812345678", "password": "whatever it is"}
    assert (await client.post("/auth/login", json=login)).status_code == 422

    # A malformed Authorization header is a 401 even where no token is needed.
    qr = await client.get(f"/chargers/{charger.id}/qr.svg", headers={"Authorization": "Basic x"})
    assert qr.status_code == 401
    assert (await client.get(f"/chargers/{charger.id}/qr.svg")).status_code == 200

    # A body that is not UTF-8 is the documented 400, a problem document.
    garbled = await client.post(
        "/auth/login", content=b'{"email": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert garbled.status_code == 400
    assert garbled.headers["content-type"] == "application/problem+json"

    # A well-formed request refused for a reason of state is a 422 with errors[] as well.
    past = {
        "charger_id": charger.id,
        "connector": 1,
        "start": "2001-01-01T00:00:00+00:00",
        "end": "2001-01-01T01:00:00+00:00",
    }
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    refused = await client.post("/bookings", json=past, headers=driver.headers)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"field": "start", "message": "the start is in the past"}]
