"""Adapter registry and chain. Adapters are registered by name (duplicates refused) and the chain is
built from ``TOKEN_SERVICE_AUTH_ADAPTERS`` in order; the first adapter that decides wins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from token_service.auth.base import AuthAdapter, AuthenticationFailed, AuthRequest, Principal
from token_service.clock import Clock
from token_service.config import ConfigError, Settings
from token_service.stores.base import Stores

__all__ = ["AdapterContext", "AuthChain", "AuthRequest", "AuthenticationFailed", "Principal", "build_chain", "register"]


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter factory may use to build its adapter."""

    settings: Settings
    stores: Stores
    clock: Clock


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
        context.stores.api_keys, context.clock, context.settings.admin_key, context.settings.revoke_keys_from_browsers
    )


register("api_key", _api_key)


class AuthChain:
    """The configured adapters, asked in order."""

    def __init__(self, adapters: Sequence[AuthAdapter]):
        self.adapters = tuple(adapters)

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """The first decision: a Principal, None when no adapter recognised a credential; AuthenticationFailed propagates."""
        for adapter in self.adapters:
            principal = adapter.authenticate(request)
            if principal is not None:
                return principal
        return None


def build_chain(names: Sequence[str], context: AdapterContext) -> AuthChain:
    """The chain of the named adapters; ConfigError for a name nobody registered."""
    adapters = []
    for name in names:
        factory = _REGISTRY.get(name)
        if factory is None:
            raise ConfigError(f"TOKEN_SERVICE_AUTH_ADAPTERS: unknown adapter {name!r} (known: {', '.join(sorted(_REGISTRY))})")
        adapters.append(factory(context))
    return AuthChain(adapters)
