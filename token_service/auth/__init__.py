"""Adapter registry and chain. Adapters are registered by name (duplicates refused) and the chain is
built from ``TOKEN_SERVICE_AUTH_ADAPTERS`` in order; the first adapter that decides wins."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from token_service.audit import AuditRecorder
from token_service.auth.base import AuthAdapter, AuthenticationFailed, AuthRequest, AuthUnavailable, Principal
from token_service.clock import Clock
from token_service.config import ConfigError, Settings
from token_service.stores.base import Stores

__all__ = [
    "AdapterContext", "AuthChain", "AuthRequest", "AuthUnavailable", "AuthenticationFailed", "Principal", "build_chain", "register",
]
ENTRY_POINT_GROUP = "token_service.auth_adapters"


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter factory may use to build its adapter."""

    settings: Settings
    stores: Stores
    clock: Clock
    options: dict[str, Any] = field(default_factory=dict)
    """The adapter's own options: the ``[adapters.<name>]`` table of the TOML file (custom adapters)."""
    audit: AuditRecorder | None = None
    """The service's audit trail, for events an adapter sees: a key exposed by a browser, a key's first use."""


AdapterFactory = Callable[[AdapterContext], AuthAdapter]
_REGISTRY: dict[str, AdapterFactory] = {}


def register(name: str, factory: AdapterFactory) -> None:
    """Register an adapter factory under ``name``; a second registration of a name is refused."""
    if name in _REGISTRY:
        raise ValueError(f"an auth adapter named {name!r} is already registered")
    _REGISTRY[name] = factory


def _api_key(context: AdapterContext) -> AuthAdapter:
    from token_service.auth.api_key import ApiKeyAdapter

    return ApiKeyAdapter(
        context.stores.api_keys, context.clock, context.settings.admin_key, context.settings.revoke_keys_from_browsers,
        audit=context.audit,
    )


def _built_in(module: str, class_name: str) -> AdapterFactory:
    """A factory importing ``token_service.auth.<module>`` only when the adapter is configured."""

    def factory(context: AdapterContext) -> AuthAdapter:
        cls = getattr(importlib.import_module(f"token_service.auth.{module}"), class_name)
        adapter: AuthAdapter = cls.from_context(context)
        return adapter

    return factory


register("api_key", _api_key)
register("hmac", _built_in("hmac", "HmacAdapter"))
register("oidc", _built_in("oidc", "OidcAdapter"))
register("session", _built_in("session", "SessionAdapter"))


class AuthChain:
    """The configured adapters, asked in order."""

    def __init__(self, adapters: Sequence[AuthAdapter]):
        self.adapters = tuple(adapters)

    def authenticate(self, request: AuthRequest, users: bool = True) -> Principal | None:
        """The first decision: a Principal, None when no adapter recognised a credential; AuthenticationFailed propagates.

        With ``users=False`` (admin and introspection endpoints, where an end user can never be allowed)
        adapters that declare ``users_only = True`` are not asked: an anonymous cookie cannot make the
        service call the product's session endpoint, nor an IdP token its JWKS, for nothing.
        """
        for adapter in self.adapters:
            if not users and getattr(adapter, "users_only", False):
                continue
            try:
                principal = adapter.authenticate(request)
            except (AuthenticationFailed, AuthUnavailable) as exc:
                exc.adapter = getattr(adapter, "name", None) or type(adapter).__name__
                raise
            if principal is not None:
                return principal
        return None


def _from_class(cls: Any, where: str) -> AdapterFactory:
    """A factory for an adapter class: ``cls.from_context(context)`` when it has one, else ``cls(context)``."""
    if not callable(cls):
        raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: {where} is not a class or factory")
    build = getattr(cls, "from_context", None)
    return build if callable(build) else cls  # type: ignore[no-any-return]


def _load_dotted(path: str) -> AdapterFactory:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: cannot import {module_name!r} ({exc.msg})") from None
    cls = getattr(module, attribute, None)
    if cls is None:
        raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: {module_name!r} has no {attribute!r}")
    return _from_class(cls, path)


def _load_entry_point(name: str) -> AdapterFactory | None:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: several installed packages publish the adapter {name!r}")
    try:
        cls = found[0].load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin stops start-up with one line
        raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: the adapter {name!r} failed to load ({type(exc).__name__})") from None
    return _from_class(cls, f"entry point {name!r}")


def _factory(name: str) -> AdapterFactory:
    if ":" in name:
        return _load_dotted(name)
    factory = _REGISTRY.get(name) or _load_entry_point(name)
    if factory is None:
        raise ConfigError(
            f"TOKEN_SERVICE_AUTH_ADAPTERS: unknown adapter {name!r} (built in: {', '.join(sorted(_REGISTRY))}; "
            f"or package.module:Class, or an entry point of {ENTRY_POINT_GROUP})"
        )
    return factory


def build_chain(names: Sequence[str], context: AdapterContext) -> AuthChain:
    """The chain of the named adapters, in order; ConfigError (one line) for one that cannot be built.

    A name is a built-in adapter, an entry point of the ``token_service.auth_adapters`` group, or a
    dotted path ``package.module:Class``. Each adapter gets the context with its own options.
    """
    adapters = []
    for name in names:
        factory = _factory(name)
        # Options are found under the configured name, or (for a dotted path) the class's own ``name``.
        own_name = getattr(getattr(factory, "__self__", factory), "name", None)
        table = context.settings.adapter_options
        options = dict(table.get(name) or (table.get(own_name, {}) if isinstance(own_name, str) else {}))
        try:
            adapter = factory(AdapterContext(context.settings, context.stores, context.clock, options, context.audit))
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: the adapter {name!r} refused its settings ({exc})") from None
        if not callable(getattr(adapter, "authenticate", None)):
            raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: {name!r} has no authenticate(request) method")
        adapters.append(adapter)
    return AuthChain(adapters)
