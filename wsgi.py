"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``."""

from __future__ import annotations

import sys

from token_service import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"token-service: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
