"""The one error renderer: every refusal, Werkzeug's included, as the contract's JSON body.

Never echoes an exception's text (it may hold a token); unexpected exceptions are logged with a
traceback under the request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from token_service.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceError,
    TemporarilyUnavailable,
    UnsupportedMediaType,
)
from token_service.stores.base import StoreUnavailable
from token_service.web.hooks import loggable

log = logging.getLogger("token_service.web")
VERIFY_ENDPOINTS = frozenset({"public.verify"})

_BY_STATUS: dict[int, type[ServiceError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def render(error: ServiceError) -> Response:
    """The JSON response for ``error``, with its headers; verify answers add ``"active": false``."""
    body = error.body()
    g.error_code = error.error  # the request log's outcome (refused:<code>) and the metrics
    if request.endpoint in VERIFY_ENDPOINTS:
        body = {"active": False, **body}
    response = jsonify(body)
    response.status_code = error.status_code
    for name, value in error.headers.items():
        response.headers[name] = value
    if isinstance(error, TemporarilyUnavailable) and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = "1"
    return response


def _http_error(exc: HTTPException) -> Response:
    kind = _BY_STATUS.get(exc.code or 500)
    if kind is None:
        return render(ServerError() if (exc.code or 500) >= 500 else InvalidRequest())
    error = kind()
    if exc.code == 405:
        allowed = exc.get_headers()
        error.headers.update({k: v for k, v in allowed if k.lower() == "allow"})
    return render(error)


def _store_unavailable(exc: StoreUnavailable) -> Response:
    # A store failure no use case translated (a managed key ring re-read every few seconds, for one): the
    # store is out, so the contract's 503, never a 500 (fail closed). The text names only the error's type.
    log.warning("store unavailable on %s %s (%s)", loggable(request.method), loggable(request.path), exc)
    return render(TemporarilyUnavailable("The revocation and key store cannot be reached; retry shortly."))


def _unexpected(exc: Exception) -> Response:
    # The contract forbids stack traces and exception text in logs (either may hold a token):
    # log the exception's type and where it was raised, nothing more.
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno}" if frame else "?"
    log.error("unhandled %s at %s on %s %s", type(exc).__name__, where, request.method, request.path)
    return render(ServerError())


def register_error_handlers(app: Flask) -> None:
    """Install the renderer for ServiceError, Werkzeug's HTTP errors and anything unexpected."""
    app.register_error_handler(ServiceError, render)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(StoreUnavailable, _store_unavailable)
    app.register_error_handler(Exception, _unexpected)
