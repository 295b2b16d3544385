"""Admin routes for the signing-key ring: ``GET /v1/admin/signing-keys`` and ``POST .../rotate``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from token_service.web import admin
from token_service.web.parsing import json_body
from token_service.web.public import service

bp = Blueprint("signing_keys", __name__, url_prefix="/v1/admin/signing-keys")
bp.before_request(admin.require_admin)
bp.after_request(admin.audit_request)


@bp.get("")
def list_signing_keys() -> Response:
    """The ring: every key with its status (next, current, retiring, revoked) and times."""
    return jsonify({"keys": service().signing_keys()})


@bp.post("/rotate")
def rotate_signing_key() -> Response:
    """Stage a new key: published now, signing once every verifier could have refreshed its JWKS."""
    json_body({}, optional=True)
    response = jsonify(service().rotate_signing_key(admin.actor()))
    response.status_code = 201
    return response
