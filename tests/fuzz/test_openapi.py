"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, served as documented, and in step with the
app's routes (a route added, removed or given another method without the document fails here)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from openapi_spec_validator import validate

from token_service import errors
from token_service.web.hooks import REQUEST_ID_RE

METHODS = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}


def shipped() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.files("token_service.web").joinpath("openapi.json").read_text("utf-8"))
    return document


def app_operations(app: Any) -> set[tuple[str, str]]:
    """(path in OpenAPI form, method) of every route; Flask's automatic OPTIONS left out. Flask adds HEAD to
    every GET rule, so HEAD is kept here and compared on its own (see below)."""
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method == "OPTIONS" and rule.provide_automatic_options:
                continue
            operations.add((path, method.lower()))
    return operations


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}


def test_document_is_valid_openapi_3_1() -> None:
    document = shipped()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_is_documented_and_every_documented_operation_exists(app: Any) -> None:
    in_app = app_operations(app)
    in_document = documented_operations(shipped())
    without_head = {op for op in in_app if op[1] != "head"}
    assert without_head - in_document == set(), "routes missing from token_service/web/openapi.json"
    assert in_document - in_app == set(), "operations documented in token_service/web/openapi.json that the app does not serve"
    # HEAD: Flask answers it on every GET route; the contract names it for /v1/verify only, whose six methods are
    # listed explicitly (and no OPTIONS: a gateway would read a 200 to OPTIONS as "allow").
    verify = {method for path, method in in_document if path == "/v1/verify"}
    assert verify == {"get", "head", "post", "put", "patch", "delete"} == {m for p, m in in_app if p == "/v1/verify"}


def test_error_codes_are_those_the_service_can_answer() -> None:
    codes = {cls.error for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.ServiceError)}
    assert set(shipped()["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) == codes


def test_unknown_json_fields_are_refused_in_the_document_as_by_the_app() -> None:
    # Data minimisation: every JSON request body refuses fields it does not know.
    document = shipped()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if not body or "application/json" not in body["content"]:
                continue
            schema = body["content"]["application/json"]["schema"]
            resolved = schemas[schema["$ref"].rsplit("/", 1)[1]]
            assert resolved["additionalProperties"] is False, (path, method)


def test_served_without_auth_with_the_configured_issuer_as_server(client: Any, settings: Any) -> None:
    response = client.get("/openapi.json", headers={"X-Request-Id": "docs-1"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.headers["X-Request-Id"] == "docs-1" and REQUEST_ID_RE.match("docs-1")
    body = response.get_json()
    assert body["servers"] == [{"url": settings.issuer}]
    assert body["paths"] == shipped()["paths"]
    validate(body)


def test_served_document_names_another_issuer(signing_key_file: str, clock: Any) -> None:
    from tests.conftest import ADMIN_KEY
    from token_service import Settings, create_app

    app = create_app(Settings(admin_key=ADMIN_KEY, signing_key_file=signing_key_file, issuer="https://tokens.example.com",
                              log_level="WARNING"), clock=clock)
    assert app.test_client().get("/openapi.json").get_json()["servers"] == [{"url": "https://tokens.example.com"}]
