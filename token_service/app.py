"""``create_app``, the only wiring point of the service (Flask, the stores, the signing keys).

Re-exported lazily by ``token_service/__init__.py``, so that importing a submodule (``token_service.verifier``
in a gateway) does not import Flask."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask

from token_service.audit import AuditSink, AuditTrail, StoredAuditSink
from token_service.auth import AdapterContext, build_chain
from token_service.clock import Clock, system_clock
from token_service.config import ConfigError, Settings, load_settings
from token_service.keys import KeyMaterialError, KeyRing, SigningKey
from token_service.service import TokenService
from token_service.signing import DirectoryKeys, ManagedKeys, SigningKeys, StaticKeys
from token_service.stores import Stores, StoreUnavailable, durability_warnings, stores_from_url

__all__ = ["create_app", "mounted_key", "ConfigError", "Settings", "load_settings"]
log = logging.getLogger("token_service")


def mounted_key(settings: Settings) -> SigningKey | None:
    """The key of TOKEN_SERVICE_SIGNING_KEY_FILE, or None when none is mounted; ConfigError when it is unusable."""
    if not settings.signing_key_file:
        return None
    try:
        pem = Path(settings.signing_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"TOKEN_SERVICE_SIGNING_KEY_FILE: cannot read {settings.signing_key_file!r} ({exc.strerror})") from None
    try:
        return SigningKey.from_pem(pem, settings.signing_alg, settings.signing_key_passphrase)  # type: ignore[arg-type]
    except KeyMaterialError as exc:
        raise ConfigError(f"TOKEN_SERVICE_SIGNING_KEY_FILE: {exc}") from None


def signing_keys(settings: Settings, stores: Stores, clock: Clock) -> SigningKeys:
    """The ring's source: managed under the KEK (seeded by a mounted key when empty), else the mounted key,
    else (embedded default only) a key generated now."""
    mounted = mounted_key(settings)

    def revoked(kids: list[str]) -> dict[str, int]:
        markers = stores.revocations.lookup([("kid", kid) for kid in kids])
        return {kid: m.revoked_at for kid, m in zip(kids, markers, strict=True) if m is not None}

    if settings.signing_key_dir:
        try:
            return DirectoryKeys(settings.signing_key_dir, settings.signing_alg, settings.signing_key_passphrase,  # type: ignore[arg-type]
                                 clock, settings.revocation_horizon, revoked, settings.signing_key_refresh)
        except RuntimeError as exc:
            raise ConfigError(f"TOKEN_SERVICE_SIGNING_KEY_DIR: {exc}") from None
        except StoreUnavailable as exc:
            raise ConfigError(f"TOKEN_SERVICE_REDIS_URL: cannot read revocations at start-up ({exc})") from None
    if settings.key_encryption_key is not None:
        try:
            return ManagedKeys(
                stores.signing_keys, settings.key_encryption_key, settings.signing_alg, clock,  # type: ignore[arg-type]
                horizon=settings.revocation_horizon, activation_delay=settings.activation_delay,
                rotation_period=settings.signing_key_rotation, seed=mounted, refresh_seconds=settings.signing_key_refresh,
                revoked=revoked,
            )
        except StoreUnavailable as exc:
            raise ConfigError(f"TOKEN_SERVICE_REDIS_URL: cannot read the managed key ring at start-up ({exc})") from None
        except RuntimeError as exc:
            raise ConfigError(f"TOKEN_SERVICE_KEY_ENCRYPTION_KEY: {exc}") from None
    if mounted is not None:
        return StaticKeys(mounted, int(clock()))
    if not settings.embedded:
        raise ConfigError(
            "TOKEN_SERVICE_REDIS_URL is set but no signing key is: set TOKEN_SERVICE_KEY_ENCRYPTION_KEY or TOKEN_SERVICE_SIGNING_KEY_FILE"
        )
    log.warning("no signing key configured: generated an ephemeral %s key; its tokens die with this process", settings.signing_alg)
    return StaticKeys(SigningKey.generate(settings.signing_alg), int(clock()))  # type: ignore[arg-type]


def _configure_logging(settings: Settings) -> None:
    from token_service.logs import configure

    configure(settings.log_level, settings.log_json)  # JSON lines, or text on the embedded default


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock, stores: Stores | None = None,
               ring: KeyRing | None = None, audit: AuditSink | None = None, check_durability: bool = True) -> Flask:
    """Build the WSGI app; settings default to the process environment (read here, once). ``check_durability``
    (on Redis): log a warning for each persistence or eviction setting that may lose revocations (the CLI skips it)."""
    if settings is None:
        settings = load_settings(os.environ)
    _configure_logging(settings)
    # A ConfigError stops start-up with its one line only: the mounted key is checked before anything is logged.
    mounted_key(settings)
    if stores is None:
        try:
            stores = stores_from_url(
                settings.redis_url, clock, settings.redis_connect_timeout, settings.redis_socket_timeout, settings.redis_max_connections,
                settings.redis_wait_replicas, settings.redis_wait_timeout, settings.audit_retention, settings.audit_max_records,
            )
        except StoreUnavailable as exc:
            raise ConfigError(f"TOKEN_SERVICE_REDIS_URL: cannot reach the Redis cluster at start-up ({exc})") from None
    # the audit store (chained) and the log line; see audit.py for failures and the budget of auth.refused records
    audit = audit or StoredAuditSink(stores.audit, stores.rate_limits, settings.audit_refusals_per_minute)
    # The adapters audit what they see (keys exposed by browsers, first uses) through the service's sink.
    context = AdapterContext(settings=settings, stores=stores, clock=clock, audit=AuditTrail(audit, clock).record)
    chain = build_chain(settings.auth_adapters, context)
    if not stores.shared:
        log.warning(
            "running on embedded single-process stores (TOKEN_SERVICE_REDIS_URL is unset): one process only, nothing survives a restart"
        )
    elif settings.redis_url is not None and check_durability:
        for line in durability_warnings(stores):
            log.warning("%s", line)
    keys = StaticKeys(ring.signing, int(clock())) if ring is not None and ring.signing else signing_keys(settings, stores, clock)
    service = TokenService(settings, stores, keys, chain, clock, audit)
    if isinstance(keys, ManagedKeys):
        keys.on_stage = lambda kid, status: service.record("signing_key.stage", f"{kid} {status}")

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    app.extensions["token_service"] = service
    from token_service.web import register_web

    register_web(app)
    from token_service.web.rate_limits import install_rate_limits

    install_rate_limits(app, settings)
    from token_service.web.metrics import install_metrics

    install_metrics(app, service, settings)
    from token_service.cli import register_commands

    register_commands(app)  # the operator commands, as Flask CLI commands too (flask --app wsgi api-keys list)
    return app
