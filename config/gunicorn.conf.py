"""Gunicorn settings for the token service: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

Command-line flags override these (``--workers 1``, ``--bind``). The ``on_starting`` hook runs in
the master before any worker forks: it validates the settings once (a bad value stops start-up with
one line, exit 2) and refuses several workers on the embedded stores, which live inside one process:
API keys, revocations and rate limits made in one worker would be unknown to the others.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_EXIT_CONFIG = 2


def _fail(message: str) -> None:
    print(f"token-service: {message}", file=sys.stderr, flush=True)
    sys.exit(_EXIT_CONFIG)


def _cores() -> int:
    # the CPUs this process may run on (a container's cpuset), not every CPU of the host
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _default_workers() -> int:
    raw = os.environ.get("WEB_CONCURRENCY")
    if raw is None or not raw.strip():
        return min(2 * _cores() + 1, 8)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        _fail(f"WEB_CONCURRENCY must be a whole number of at least 1, not {raw!r}")
    return value


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = _default_workers()
worker_class = "sync"
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None  # the app writes its own access log (token_service.access), with the request id
errorlog = "-"
# No runtime control socket (gunicorn >= 25.1): its default path is one per user, so a second
# instance takes it over, and its "worker add" would bypass the one-worker check below. Signals
# (HUP, TERM, TTIN/TTOU) and the orchestrator remain the controls.
control_socket_disable = True
preload_app = False  # each worker builds its app after the fork: no Redis pool or key shared across a fork
# The workers' heartbeat files on tmpfs: a container's /tmp is on its overlay disk, where a stalled
# write gets healthy workers killed (gunicorn's own advice). Gunicorn creates them with mkstemp.
if os.path.isdir("/dev/shm"):  # noqa: S108
    worker_tmp_dir = "/dev/shm"  # noqa: S108


def on_starting(server: Any) -> None:
    """Check the settings in the master; refuse several workers on the embedded single-process stores."""
    from token_service.config import ConfigError, load_settings

    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        _stop(server, str(exc))
        return
    if settings.redis_url is None and server.cfg.workers > 1:
        _stop(server, "the embedded stores serve one process only: run with --workers 1 or set TOKEN_SERVICE_REDIS_URL")


def _stop(server: Any, message: str) -> None:
    if getattr(server, "pidfile", None) is not None:
        server.pidfile.unlink()
    _fail(message)
