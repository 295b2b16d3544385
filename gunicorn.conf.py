"""Gunicorn reads ``./gunicorn.conf.py`` when no ``-c`` is given: this loads ``config/gunicorn.conf.py``
so that ``gunicorn wsgi:app`` from the repository root gets the same settings and start-up checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parent / "config" / "gunicorn.conf.py"
_spec = importlib.util.spec_from_file_location("token_service_gunicorn_conf", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({name: value for name, value in vars(_module).items() if not name.startswith("_")})
