"""Request hooks: the request id, the 16 KiB limit checked first, security headers, CORS, access log."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, current_app, g, request

from token_service.errors import PayloadTooLarge

MAX_BODY = 16 * 1024
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
CORS_PATHS = frozenset({"/v1/tokens", "/v1/revoke"})
access_log = logging.getLogger("token_service.access")


def _begin() -> None:
    g.started = time.perf_counter()
    supplied = request.headers.get("X-Request-Id", "")
    g.request_id = supplied if REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise PayloadTooLarge()
    if length is None and "chunked" in (request.headers.get("Transfer-Encoding") or "").lower():
        # No Content-Length to check: Werkzeug stops reading at the limit without complaint, so read the
        # body now and refuse it when the client sent more (never parse a truncated body).
        if len(request.get_data(cache=True)) >= MAX_BODY and request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge()


def _cors(response: Response) -> None:
    origin = request.headers.get("Origin")
    if origin is None or request.path not in CORS_PATHS:
        return
    response.vary.add("Origin")
    service = current_app.extensions["token_service"]
    if not service.origin_allowed(origin):
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    if service.cookie_credentials_allowed(origin):
        # A session cookie travels only with credentials: allowed for the configured origins alone,
        # never with "*" (there is none) and never for origins a public key brought in.
        response.headers["Access-Control-Allow-Credentials"] = "true"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-Id"
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"


def _finish(response: Response) -> Response:
    request_id = getattr(g, "request_id", None) or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    response.headers["X-Content-Type-Options"] = "nosniff"
    present = {name.lower() for name in response.headers.keys()}  # Headers.setdefault raises and catches per miss
    if "cache-control" not in present:
        response.headers.add("Cache-Control", "no-store")
    if "referrer-policy" not in present:
        response.headers.add("Referrer-Policy", "no-referrer")
    _cors(response)
    started = getattr(g, "started", None)
    access_log.info(
        "%s %s %d %.1fms id=%s addr=%s",
        loggable(request.method), loggable(request.path), response.status_code,
        (time.perf_counter() - started) * 1000 if started else 0.0, request_id, request.remote_addr,
    )
    return response


def loggable(text: str, limit: int = 256) -> str:
    """``text`` safe for a log line: control characters escaped (no forged lines), length bounded."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("…" if len(text) > limit else "")


def register_hooks(app: Flask) -> None:
    """Install the before/after request hooks."""
    app.before_request(_begin)
    app.after_request(_finish)
