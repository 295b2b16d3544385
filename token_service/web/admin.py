"""Admin routes under /v1/admin: revocations, API keys, token status, the audit log. Admin key required;
every call is written to the audit log (``token_service.audit``): a log line per call, and a stored
record per change (and per refused call, ``auth.refused``)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from token_service.audit import Actor
from token_service.errors import InvalidRequest, ServiceError, TemporarilyUnavailable
from token_service.stores.base import StoreUnavailable
from token_service.web.hooks import loggable
from token_service.web.parsing import auth_request, json_body, page_params
from token_service.web.public import service

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")
audit_log = logging.getLogger("token_service.audit")

_TARGETS = ("jti", "token", "sub", "personaId", "client_id", "kid")
_REVOCATION_FIELDS = {**{name: False for name in _TARGETS}, "reason": True}
_API_KEY_FIELDS = {"type": False, "name": True, "personas": False, "scopes": False, "origins": False,
                   "permissions": False, "expires_at": True}
_ROTATE_FIELDS = {"grace_seconds": False}


@bp.before_request
def require_admin() -> None:
    """Every admin route: an admin key, or 401/403."""
    route = f"{request.method} {request.url_rule.rule if request.url_rule is not None else loggable(request.path)}"
    g.principal = service().require_admin(auth_request(), route)


@bp.after_request
def audit_request(response: Response) -> Response:
    """Every admin call leaves an audit log line with its actor and outcome."""
    principal = getattr(g, "principal", None)
    if principal is not None:
        audit_log.info(
            "admin %s %s -> %d actor=%s addr=%s id=%s", request.method, loggable(request.path), response.status_code,
            principal.client_id, request.remote_addr, g.get("request_id"),
        )
    return response


def actor() -> Actor:
    """The admin caller, for the audit trail."""
    return Actor(g.principal.client_id, request.remote_addr)


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _empty() -> Response:
    return Response(status=204)


@bp.post("/revocations")
def create_revocation() -> Response:
    """Revoke by exactly one of jti, token, sub, personaId, client_id or kid."""
    body = json_body(_REVOCATION_FIELDS)
    given = [name for name in _TARGETS if name in body]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of jti, token, sub, personaId, client_id or kid.")
    entry = service().revoke(given[0], body[given[0]], body.get("reason"), actor())
    return _json(entry.to_dict(), 201)


@bp.get("/revocations")
def list_revocations() -> Response:
    """A page of the revocations in force, oldest first."""
    cursor, limit = page_params()
    items, next_cursor = service().list_revocations(cursor, limit)
    return _json({"items": [entry.to_dict() for entry in items], "next_cursor": next_cursor})


@bp.delete("/revocations/<revocation_id>")
def lift_revocation(revocation_id: str) -> Response:
    """Lift a revocation made by mistake."""
    service().lift_revocation(revocation_id, actor())
    return _empty()


@bp.post("/api-keys")
def create_api_key() -> Response:
    """Create a key; its text is in this answer only."""
    record, text = service().create_api_key(json_body(_API_KEY_FIELDS), actor())
    return _json({**record.metadata(), "key": text}, 201)


@bp.get("/api-keys")
def list_api_keys() -> Response:
    """A page of key metadata, in creation order."""
    cursor, limit = page_params()
    items, next_cursor = service().list_api_keys(cursor, limit)
    return _json({"items": [key.metadata() for key in items], "next_cursor": next_cursor})


@bp.post("/api-keys/<key_id>/rotate")
def rotate_api_key(key_id: str) -> Response:
    """A new key with the same settings; the old one keeps working for ``grace_seconds`` (body optional)."""
    record, text = service().rotate_api_key(key_id, json_body(_ROTATE_FIELDS, optional=True), actor())
    return _json({**record.metadata(), "key": text}, 201)


@bp.delete("/api-keys/<key_id>")
def delete_api_key(key_id: str) -> Response:
    """Revoke a key at once; ``revoke_tokens=true`` also revokes every token it minted."""
    raw = request.args.get("revoke_tokens", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest("revoke_tokens must be true or false.")
    service().delete_api_key(key_id, raw in ("true", "1"), actor())
    return _empty()


@bp.get("/audit")
def list_audit() -> Response:
    """A page of the audit log, oldest first, filtered by ``since`` (a time) and ``action`` (an exact dotted name)."""
    cursor, limit = page_params()
    items, next_cursor = service().list_audit(request.args.get("since"), request.args.get("action"), cursor, limit)
    return _json({"items": [record.item() for record in items], "next_cursor": next_cursor})


@bp.post("/token-status")
def token_status() -> Response:
    """The operator's full verdict on a token: header, claims (when the signature holds), every reason."""
    body = json_body({"token": False})
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidRequest("token is required.")
    try:
        verdict = service().inspect(token)
    except StoreUnavailable:
        raise TemporarilyUnavailable("The revocation store cannot be reached; the verdict would be incomplete.") from None
    reasons = []
    for reason in verdict.reasons:
        item: dict[str, Any] = {"code": reason.code, "detail": reason.detail}
        if reason.revocation_id:
            item["revocation_id"] = reason.revocation_id
        reasons.append(item)
    return _json({
        "active": verdict.valid and not reasons,
        "header": verdict.header,
        "claims": verdict.raw_claims if verdict.claims is not None or verdict.raw_claims is not None else None,
        "reasons": reasons,
    })


__all__ = ["bp", "ServiceError"]
