"""Request parsing at the HTTP edge: JSON or form bodies with only the fields an endpoint accepts,
query parameters, and the framework-free view of a request that auth adapters see."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import g, request

from token_service.auth import AuthRequest
from token_service.errors import InvalidRequest, UnsupportedMediaType

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _field_name(name: str) -> str:
    return name if len(name) <= 64 and name.isprintable() else name[:64].encode("unicode_escape").decode() + "…"


def has_body() -> bool:
    """True when the request carries a body (a non-zero Content-Length, or chunked)."""
    if request.content_length:
        return True
    return "chunked" in (request.headers.get("Transfer-Encoding") or "").lower()


def _check_fields(data: Mapping[str, Any], fields: Mapping[str, bool]) -> dict[str, Any]:
    for name, value in data.items():
        if name not in fields:
            raise InvalidRequest(f"Unknown field: {_field_name(name)}.")
        if value is None and not fields[name]:
            raise InvalidRequest(f"{name} must not be null.")
    return dict(data)


def _parse_json() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        raise InvalidRequest(f"The field {_field_name(str(exc))} appears more than once.") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def json_body(fields: Mapping[str, bool], optional: bool = False) -> dict[str, Any]:
    """The JSON object body with only ``fields`` (name -> null allowed); 415 for another type, 400 when malformed."""
    if not has_body():
        if optional:
            return {}
        if request.mimetype == JSON:
            raise InvalidRequest("A JSON body is required.")
        raise UnsupportedMediaType("The request body must be application/json.")
    if request.mimetype != JSON:
        raise UnsupportedMediaType("The request body must be application/json.")
    return _check_fields(_parse_json(), fields)


def form_or_json_body(fields: Mapping[str, bool]) -> dict[str, Any]:
    """A form-encoded or JSON body with only ``fields``; an absent body is an empty one."""
    if not has_body():
        return {}
    if request.mimetype == JSON:
        return _check_fields(_parse_json(), fields)
    if request.mimetype != FORM:
        raise UnsupportedMediaType("The request body must be application/x-www-form-urlencoded or application/json.")
    # RFC 6749 §3.1 (which RFC 7009 and 7662 build on): unrecognised form parameters are ignored,
    # and none may be repeated. Only the known ones are kept.
    form = request.form
    for name in form:
        if len(form.getlist(name)) > 1:
            raise InvalidRequest(f"The parameter {_field_name(name)} appears more than once.")
    return {name: form[name] for name in fields if name in form}


def page_params() -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1 to 100, default 50) of a listing."""
    cursor = request.args.get("cursor") or None
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return cursor, 50
    # ASCII digits only: str.isdigit() also accepts "²" (int() then raises: a 500) and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
        raise InvalidRequest("limit must be a whole number from 1 to 100.")
    return cursor, int(raw)


def auth_request() -> AuthRequest:
    """The request as auth adapters see it (body read once, bounded by the 16 KiB limit)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if g.get("request_id"):
        headers["x-request-id"] = g.request_id  # the effective id (echoed or generated), for upstream calls
    return AuthRequest(
        method=request.method,
        path=request.path,
        headers=headers,
        body=request.get_data(cache=True) if has_body() else b"",
        remote_addr=request.remote_addr,
    )
