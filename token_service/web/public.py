"""Public routes: minting, gateway verification, introspection, self-revocation, discovery, health."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from token_service.auth.base import bearer_credentials
from token_service.claims import valid_persona_id, valid_sub
from token_service.config import SCOPE_RE
from token_service.errors import InvalidRequest, Unauthorized
from token_service.health import NotReady
from token_service.service import TokenService
from token_service.web.parsing import auth_request, form_or_json_body, json_body

bp = Blueprint("public", __name__)

_MINT_FIELDS = {"personaId": False, "scopes": False, "ttl": False, "sub": False}
_TOKEN_FIELDS = {"token": False, "token_type_hint": False}
_EXPOSED_FIELDS = {"keys": False}


def service() -> TokenService:
    """The service of the running app."""
    svc: TokenService = current_app.extensions["token_service"]
    return svc


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.post("/v1/tokens")
def mint() -> Response:
    """Mint a token for the authenticated caller."""
    svc = service()
    principal = svc.authenticate(auth_request())
    body = json_body(_MINT_FIELDS)
    persona_id = body.get("personaId")
    if persona_id is None:
        raise InvalidRequest("personaId is required.")
    if not valid_persona_id(persona_id):
        raise InvalidRequest("personaId must be 1 to 128 characters of A-Z a-z 0-9 . _ : -.")
    scopes = body.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list) or not scopes or len(scopes) > 50 or not all(isinstance(s, str) for s in scopes)
    ):
        raise InvalidRequest("scopes must be a non-empty list of strings.")
    ttl = body.get("ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
        raise InvalidRequest("ttl must be a whole number of seconds.")
    sub = body.get("sub")
    if sub is not None and not valid_sub(sub):
        raise InvalidRequest("sub must be 1 to 256 visible ASCII characters without spaces.")
    minted = svc.mint(principal, persona_id, scopes, ttl, sub, request.headers.get("Origin"))
    return _json({
        "token": minted.token,
        "token_type": "Bearer",
        "expires_in": minted.ttl,
        "expires_at": minted.claims.exp,
        "scope": minted.claims.scope,
        "personaId": minted.claims.persona_id,
    })


def _required_scopes() -> tuple[str, ...]:
    raw = request.args.get("scope")
    if raw is None:
        return ()
    scopes = tuple(s for s in raw.split(" ") if s)
    if not scopes or any(not SCOPE_RE.match(s) for s in scopes):
        raise InvalidRequest("scope must be a space-separated list of scopes.")
    return scopes


# No automatic OPTIONS: a gateway that forwards the client's method would read Flask's 200 as "allow".
@bp.route("/v1/verify", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], provide_automatic_options=False)
def verify() -> Response:
    """Forward auth: 200 with X-Auth-* headers for a valid token meeting the requirements."""
    svc = service()
    persona_id = request.args.get("personaId")
    if persona_id is not None and not valid_persona_id(persona_id):
        raise InvalidRequest("personaId must be 1 to 128 characters of A-Z a-z 0-9 . _ : -.")
    scopes = _required_scopes()
    token = bearer_credentials(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("A bearer token is required.", headers=svc.challenge())
    claims = svc.verify(token)
    svc.check_requirements(claims, persona_id, scopes)
    response = _json({
        "active": True, "sub": claims.sub, "personaId": claims.persona_id, "scope": claims.scope,
        "exp": claims.exp, "iat": claims.iat, "jti": claims.jti, "client_id": claims.client_id,
    })
    response.headers["X-Auth-Subject"] = claims.sub
    response.headers["X-Auth-Persona"] = claims.persona_id
    response.headers["X-Auth-Scope"] = claims.scope
    response.headers["X-Auth-Expires"] = str(claims.exp)
    response.headers["X-Auth-Token-Id"] = claims.jti
    response.headers["X-Auth-Client-Id"] = claims.client_id
    return response


@bp.post("/v1/introspect")
def introspect() -> Response:
    """RFC 7662 introspection for secret keys granted introspect, and admin keys."""
    svc = service()
    principal = svc.authenticate(auth_request(), users=False)
    svc.require_introspect(principal)
    token = _token_field(form_or_json_body(_TOKEN_FIELDS))
    return _json(svc.introspect(principal, token))


@bp.get("/v1/revocations/feed")
def revocation_feed() -> Response:
    """Revocations for verifiers that check tokens locally (secret keys granted introspect, admin keys)."""
    svc = service()
    principal = svc.authenticate(auth_request(), users=False)
    svc.require_introspect(principal)
    return _json(svc.revocation_feed(principal, request.args.get("since")))


@bp.post("/v1/revoke")
def revoke() -> Response:
    """RFC 7009 self-revocation: possession of the token is enough."""
    body = form_or_json_body(_TOKEN_FIELDS)
    service().revoke_own(_token_field(body))
    return _json({})


def _token_field(body: dict[str, Any]) -> str:
    token = body.get("token")
    if token is None or token == "":
        raise InvalidRequest("token is required.")
    if not isinstance(token, str):
        raise InvalidRequest("token must be a string.")
    hint = body.get("token_type_hint")
    if hint is not None and not isinstance(hint, str):
        raise InvalidRequest("token_type_hint must be a string.")
    return token


@bp.post("/v1/keys/exposed")
def report_exposed() -> Response:
    """Revoke leaked secret and admin keys: possession of a key is enough to report it (secret scanners)."""
    svc = service()
    svc.check_report_rate(request.remote_addr)  # every report counts, a malformed one too
    body = json_body(_EXPOSED_FIELDS)
    if "keys" not in body:
        raise InvalidRequest("keys is required: a list of the exposed key texts.")
    return _json({"revoked": svc.report_exposed(body["keys"], request.remote_addr)})


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public keys that may have signed a live token."""
    response = _json(service().jwks())
    response.headers["Cache-Control"] = f"public, max-age={service().jwks_max_age()}"
    return response


@bp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    """RFC 8414 metadata."""
    response = _json(service().metadata())
    response.headers["Cache-Control"] = f"public, max-age={service().settings.jwks_max_age}"
    return response


@functools.cache
def _openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document shipped in the package (token_service/web/openapi.json), read once."""
    document: dict[str, Any] = json.loads(resources.files("token_service.web").joinpath("openapi.json").read_text("utf-8"))
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API (no auth), with this deployment's issuer as its server."""
    document = {**_openapi_document(), "servers": [{"url": service().settings.issuer}]}
    response = _json(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """200 while the process serves."""
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """200 when the signing key is loaded and the stores answer; 503 with the reason otherwise. Both carry
    ``status`` and every check (token_service.health)."""
    readiness = service().readiness()
    if not readiness.ready:
        raise NotReady(readiness)
    return _json(readiness.body())
