"""The HTTP edge: blueprints, hooks and the one error renderer."""

from __future__ import annotations

from flask import Flask

from token_service.web import admin, public, signing_keys
from token_service.web.errors import register_error_handlers
from token_service.web.hooks import MAX_BODY, register_hooks


def register_web(app: Flask) -> None:
    """Attach every route, hook and error handler to ``app``."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY
    register_hooks(app)
    register_error_handlers(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(signing_keys.bp)
