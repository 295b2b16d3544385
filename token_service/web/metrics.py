"""Prometheus metrics (prometheus-client): ``GET /metrics``, or a listener of its own, or nothing.

``TOKEN_SERVICE_METRICS``: ``on`` serves ``/metrics`` on the app; ``off`` registers no route and collects
nothing; ``host:port`` collects and serves on that address instead (see docs/operations/observability.md).

Under gunicorn the workers are processes: prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set up by config/gunicorn.conf.py) keeps each worker's values in a file, and a scrape adds them up. Each app
has its own registry (tests build many apps in one process). The key ring's gauges and the build info are
computed at scrape time by the process that answers.

Label values come from bounded sets only: route templates (never a raw path), status codes, the contract's
error codes and verdicts, configured adapter names, limit names, Redis command names. Never a subject, jti,
persona, client id or address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest, start_http_server
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from token_service import ring as rules
from token_service.config import Settings
from token_service.events import AuthFailure
from token_service.service import TokenService
from token_service.stores.base import StoreUnavailable

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label (and log field) of a request no route matched: its raw path is never a label."""
VERIFYING = {"public.verify": "verify", "public.introspect": "introspect"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def multiprocess_mode() -> bool:
    """True when prometheus-client chose its multiprocess mode (PROMETHEUS_MULTIPROC_DIR was set when it was imported)."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


class RingCollector:
    """The key ring's state and the build info, computed when scraped."""

    def __init__(self, service: TokenService):
        self.service = service
        self.version = _version()

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry must not call collect() (a store read) when this is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The build info, then the ring's gauges (none when the ring cannot be read now)."""
        settings = self.service.settings
        info = GaugeMetricFamily("token_service_build_info", "Always 1: the version and configuration of this instance.",
                                 labels=["version", "signing_alg", "stores", "ring"])
        info.add_metric([self.version, settings.signing_alg, "shared" if settings.redis_url else "embedded", _ring_kind(settings)], 1)
        yield info
        now = self.service.clock()
        try:
            states = self.service.keys.states()
        except StoreUnavailable:
            return  # the store error is counted; absent gauges are what the alerts look for
        yield from ring_metrics(states, now, settings)


def ring_metrics(states: list[rules.KeyState], now: float, settings: Settings) -> Iterator[Metric]:
    """The key ring's gauges from its states at ``now``."""
    counts = GaugeMetricFamily("token_service_signing_keys", "Keys of the signing ring by status.", labels=["status"])
    for status in ("next", "current", "retiring", "revoked"):
        counts.add_metric([status], sum(1 for s in states if s.status == status))
    yield counts
    current = next((s for s in states if s.status == "current"), None)
    if current is not None:
        yield GaugeMetricFamily("token_service_signing_key_age_seconds",
                                "Seconds since the signing key started signing.", value=now - current.times.activates_at)
        retires = current.retires_at
        if retires is None and settings.key_encryption_key is not None and settings.signing_key_rotation is not None:
            # no successor staged yet: the scheduled rotation stages one when the period is up; it signs a delay later
            retires = current.times.activates_at + settings.signing_key_rotation + settings.activation_delay
        if retires is not None:
            yield GaugeMetricFamily(
                "token_service_signing_key_retirement_seconds",
                "Seconds until the signing key stops signing (its successor's activation, or the scheduled rotation's); "
                "negative when the rotation is overdue.", value=retires - now)
    until = rules.next_change(states, now)
    if until is not None:
        yield GaugeMetricFamily("token_service_signing_key_next_stage_seconds",
                                "Seconds until the ring's next stage change (a key activating or leaving).", value=until)


def _ring_kind(settings: Settings) -> str:
    if settings.signing_key_dir:
        return "directory"
    if settings.key_encryption_key is not None:
        return "managed"
    return "static"


def _version() -> str:
    try:
        return metadata.version("persona-token-service")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The service's collectors, in a registry of this app's own."""

    def __init__(self, service: TokenService):
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("token_service_http_requests", "HTTP requests answered, by route template, method and status.",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("token_service_http_request_duration_seconds", "Time to answer a request, by route template.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.mints = Counter("token_service_mint_requests", "POST /v1/tokens answers: outcome minted or refused:<error>, "
                             "and the kind of credential (none when unauthenticated).", ["outcome", "credential"], registry=r)
        self.verifications = Counter("token_service_token_verifications",
                                     "Tokens checked by /v1/verify and /v1/introspect, by result (valid or the reason).",
                                     ["endpoint", "result"], registry=r)
        self.revocations = Counter("token_service_revocations", "Revocations stored, by type and by whom (admin or holder).",
                                   ["type", "by"], registry=r)
        self.rate_limited = Counter("token_service_rate_limited", "Requests refused with 429, by limit.", ["limit"], registry=r)
        self.auth_failures = Counter("token_service_auth_failures", "Failed authentications, by adapter and reason.",
                                     ["adapter", "reason"], registry=r)
        self.store_errors = Counter("token_service_store_errors", "Redis calls that failed, by command.", ["operation"], registry=r)
        self.store_latency = Histogram("token_service_store_call_duration_seconds", "Time of each Redis call, by command.",
                                       ["operation"], buckets=STORE_BUCKETS, registry=r)
        self.ring = RingCollector(service)
        if self.multiprocess:
            # A scrape adds up every worker's files; the ring and info come from the worker that answers.
            self.scrape_registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self.scrape_registry)  # type: ignore[no-untyped-call]
        else:
            self.scrape_registry = r
        self.scrape_registry.register(self.ring)
        self._store_ops: dict[Any, tuple[Any, Any]] = {}
        # label children by their values (cheaper than labels() on every request; the label sets are bounded)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._verification_children: dict[tuple[str, str], Any] = {}
        self.listener: tuple[Any, Any] | None = None
        """(server, thread) of the listener of its own, in one process with TOKEN_SERVICE_METRICS=host:port."""

    def store_call(self, call: Callable[..., Any], seconds: float, failed: bool) -> None:
        """Observer of the Redis store's calls (stores.redis.observe_calls)."""
        name = getattr(call, "__name__", None) or type(call).__name__
        children = self._store_ops.get(name)
        if children is None:
            operation = name.lower()[:32]
            children = self._store_ops[name] = (self.store_latency.labels(operation), self.store_errors.labels(operation))
        children[0].observe(seconds)
        if failed:
            children[1].inc()

    def observe(self, endpoint: str | None, route: str, method: str, status: int, seconds: float, outcome: str,
                facts: dict[str, Any]) -> None:
        """Count one answered request (the after-request hook calls this once per request; ``facts``: the
        request's ``g``)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)
        if endpoint is None:
            return
        if endpoint == "public.mint":
            self.mints.labels(outcome, facts.get("credential") or "none").inc()
        elif endpoint in VERIFYING:
            result = verification_result(endpoint, status, outcome, facts.get("verdict"))
            child = self._verification_children.get((endpoint, result))
            if child is None:
                child = self._verification_children[(endpoint, result)] = self.verifications.labels(VERIFYING[endpoint], result)
            child.inc()
        if status == 429:
            limit = facts.get("rate_limit") or ("exposed_key_reports" if endpoint == "public.report_exposed" else "other")
            self.rate_limited.labels(limit).inc()

    def scrape(self) -> Response:
        """The Prometheus text exposition of this process (or of every worker, in multiprocess mode)."""
        return Response(generate_latest(self.scrape_registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def verification_result(endpoint: str, status: int, outcome: str, verdict: str | None) -> str:
    """The result label of a verification: the token's verdict when one was reached, else what stopped it: ``missing``
    (verify without a token), ``unauthenticated`` (introspection by a caller who did not authenticate), or the error."""
    if status == 403 and outcome == "refused:insufficient_scope":
        return "insufficient_scope"
    if verdict is not None:
        return str(verdict)
    if status == 401:
        return "missing" if endpoint == "public.verify" else "unauthenticated"
    return outcome.removeprefix("refused:")


class RequestEvents:
    """The service's events as request facts (for the log line and the hook's counts) and counters."""

    def __init__(self, metrics: Metrics | None):
        self.metrics = metrics

    def authenticated(self, kind: str, client_id: str) -> None:
        """See Events.authenticated: noted for the request log (the client id) and the mint counter (the kind)."""
        if has_request_context():
            g.credential = kind
            g.client_id = client_id

    def authentication_failed(self, adapter: str, reason: AuthFailure) -> None:
        """See Events.authentication_failed."""
        if self.metrics is not None:
            self.metrics.auth_failures.labels(adapter[:64], reason).inc()
        if has_request_context():
            g.auth_failure = f"{adapter[:64]}:{reason}"

    def token_checked(self, result: str) -> None:
        """See Events.token_checked."""
        if has_request_context():
            g.verdict = result

    def revoked(self, rtype: str, by: str) -> None:
        """See Events.revoked."""
        if self.metrics is not None:
            self.metrics.revocations.labels(rtype, by).inc()


def _serve() -> Response:
    """Prometheus text format (API.md: no auth; keep it internal, see docs/operations/observability.md)."""
    metrics: Metrics = current_app.extensions["token_service.metrics"]
    return metrics.scrape()


def install_metrics(app: Flask, service: TokenService, settings: Settings) -> Metrics | None:
    """Collect metrics as TOKEN_SERVICE_METRICS says: the route (on), a listener of its own (host:port), or nothing."""
    if settings.metrics is False:
        service.events = RequestEvents(None)
        return None
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double a scrape and no alert here uses them
    metrics = Metrics(service)
    app.extensions["token_service.metrics"] = metrics
    service.events = RequestEvents(metrics)
    if settings.redis_url is not None:
        from token_service.stores.redis import observe_calls

        observe_calls(metrics.store_call)
    listener = settings.metrics_listener
    if listener is None:
        app.add_url_rule("/metrics", endpoint="metrics", view_func=_serve, methods=["GET"])
    elif not metrics.multiprocess:
        # One process (the development server, one embedded instance): a listener thread of its own. Under gunicorn
        # the master serves the workers' sum instead (config/gunicorn.conf.py).
        metrics.listener = start_http_server(listener[1], listener[0], registry=metrics.scrape_registry)
    return metrics
