"""Request hooks: the request id, the 16 KiB limit checked first, security headers, CORS, and the request's
log line and metrics (one record per request, built once; docs/operations/observability.md)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, current_app, g, request

from token_service.errors import PayloadTooLarge
from token_service.logs import client_address
from token_service.web.metrics import METHODS, UNMATCHED

MAX_BODY = 16 * 1024
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
CORS_PATHS = frozenset({"/v1/tokens", "/v1/revoke"})
access_log = logging.getLogger("token_service.access")
# What a successful answer did, for the log's outcome (other endpoints: ok).
DONE = {"public.mint": "minted", "public.verify": "verified", "public.introspect": "introspected", "public.revoke": "revoked",
        "admin.create_revocation": "revoked"}


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
    _record(response.status_code, request_id)
    return response


def _record(status: int, request_id: str) -> None:
    """The request's log line and metrics. The route is the URL rule's template: a raw path is never kept."""
    # The context-local proxies resolved once (each attribute through a proxy costs a lookup).
    facts = g._get_current_object().__dict__  # noqa: SLF001
    req = request._get_current_object()  # type: ignore[attr-defined]  # noqa: SLF001
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # noqa: SLF001
    started = facts.get("started")
    seconds = time.perf_counter() - started if started else 0.0
    rule = req.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    endpoint = rule.endpoint if rule is not None else None
    method = req.method if req.method in METHODS else "other"
    error = facts.get("error_code")
    outcome = f"refused:{error or status}" if status >= 400 else DONE.get(endpoint or "", "ok")
    extensions = app.extensions
    metrics = extensions.get("token_service.metrics")
    if metrics is not None:
        metrics.observe(endpoint, route, method, status, seconds, outcome, facts)
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {"request_id": request_id, "method": method, "route": route, "status": status, "latency_ms": round(seconds * 1000, 2),
              "client": client_address(req.remote_addr, extensions["token_service"].settings.log_client_address),
              "outcome": outcome}
    for name in ("client_id", "verdict", "auth_failure", "rate_limit"):
        value = facts.get(name)
        if value is not None:
            fields[name] = value
    # makeRecord + handle: what Logger.info does, without looking up the caller's frame (no format uses it).
    access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "%s %s %d %.1fms",
                                            (method, route, status, seconds * 1000), None, extra=fields))


def loggable(text: str, limit: int = 256) -> str:
    """``text`` safe for a log line: control characters escaped (no forged lines), length bounded."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("…" if len(text) > limit else "")


def register_hooks(app: Flask) -> None:
    """Install the before/after request hooks."""
    app.before_request(_begin)
    app.after_request(_finish)
