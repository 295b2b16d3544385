"""Persona token service: mints short-lived scoped JWTs bound to a personaId, tracks revocations in a
shared store, and verifies tokens for gateways. ``create_app`` (in ``token_service.app``) is the only
wiring point.

``create_app`` and ``mounted_key`` are loaded on first use (PEP 562): importing a submodule such as
``token_service.verifier`` runs this file, and must not import Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from token_service.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from token_service.app import create_app, mounted_key

__all__ = ["create_app", "mounted_key", "ConfigError", "Settings", "load_settings"]
_LAZY = frozenset({"create_app", "mounted_key"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from token_service import app

        return getattr(app, name)
    raise AttributeError(f"module 'token_service' has no attribute {name!r}")
