"""Gunicorn settings for the token service: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

Command-line flags override these (``--workers 1``, ``--bind``). The ``on_starting`` hook runs in
the master before any worker forks: it validates the settings once (a bad value stops start-up with
one line, exit 2) and refuses several workers on the embedded stores, which live inside one process:
API keys, revocations and rate limits made in one worker would be unknown to the others.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import stat
import sys
import tempfile
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


# Every choice below is measured or argued in docs/operations/deployment.md ("gunicorn settings").
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = _default_workers()
# sync, one thread: the requests are CPU-bound Python (signatures) under one GIL per process; gthread won
# nothing in docs/performance.md's runs. Behind a proxy, so slow clients never hold a worker.
worker_class = "sync"
# A request makes at most a few Redis calls, each bounded by the connect and socket timeouts (about 3 s with
# the defaults): 30 s only ever catches a stuck worker. Keep TOKEN_SERVICE_REDIS_WAIT_TIMEOUT well inside it.
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish for up to this long. Orchestrators must wait longer
# (compose stop_grace_period 40 s; Kubernetes terminationGracePeriodSeconds 45 s with a 5 s preStop).
graceful_timeout = 30
keepalive = 5  # used by threaded workers only: sync workers close each connection
# No max_requests: the soak run (docs/soak.md) shows flat worker memory, and a recycled worker starts with an
# empty verify cache and re-reads the key ring. Set GUNICORN_CMD_ARGS="--max-requests N --max-requests-jitter M"
# if your deployment leaks.
max_requests = 0
accesslog = None  # the app writes its own access log (token_service.access), with the request id
errorlog = "-"
# No runtime control socket (gunicorn >= 25.1): its default path is one per user, so a second
# instance takes it over, and its "worker add" would bypass the one-worker check below. Signals
# (HUP, TERM, TTIN/TTOU) and the orchestrator remain the controls.
control_socket_disable = True
# Off, although measured to save memory (4 workers: 162 MiB PSS without, 83 MiB with): with it the app is built
# in the master, so its Redis connections (opened by the start-up checks and the key ring), the limiter's
# storage and the ring's locks would be inherited by every worker; each worker builds its own after the fork.
preload_app = False
# The workers' heartbeat files on tmpfs: a container's /tmp is on its overlay disk, where a stalled
# write gets healthy workers killed (gunicorn's own advice). Gunicorn creates them with mkstemp.
if os.path.isdir("/dev/shm"):  # noqa: S108
    worker_tmp_dir = "/dev/shm"  # noqa: S108


# Metrics (docs/operations/observability.md): the workers are processes, so prometheus-client runs in its
# multiprocess mode: each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and a scrape adds them up.
# It must be set before a worker imports prometheus-client: here, in the master, before any fork. Unset: a private
# directory (mode 0700, on tmpfs when there is one) that the master removes when it exits. This file is read again
# on a reload (HUP): the variable is set by then, so the same directory is kept.
_METRICS_DIR_OURS: str | None = None
_MASTER_PID = os.getpid()
_metrics_listener: tuple[str, int] | None = None


def _remove_metrics_dir(anywhere: bool = False) -> None:
    """Remove the private metrics directory; only in the master (the workers inherit this exit handler)."""
    if _METRICS_DIR_OURS is not None and (anywhere or os.getpid() == _MASTER_PID):
        shutil.rmtree(_METRICS_DIR_OURS, ignore_errors=True)


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _METRICS_DIR_OURS = tempfile.mkdtemp(prefix="token-service-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)  # noqa: S108
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR_OURS
    atexit.register(_remove_metrics_dir)  # a start-up that stops (sys.exit) never reaches on_exit


def _prepare_metrics_dir(server: Any) -> None:
    """Refuse a directory others could write to (forged counts); wipe what an earlier run left (stale counts)."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        info = os.stat(path)
    except OSError:
        _stop(server, f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a directory")
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _stop(server, f"PROMETHEUS_MULTIPROC_DIR {path!r} must be a directory of this user that no one else can write to")
        return
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def on_starting(server: Any) -> None:
    """Check the settings in the master; refuse several workers on the embedded single-process stores; prepare
    the metrics directory."""
    global _metrics_listener
    from token_service.config import ConfigError, load_settings

    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        _stop(server, str(exc))
        return
    if settings.redis_url is None and server.cfg.workers > 1:
        _stop(server, "the embedded stores serve one process only: run with --workers 1 or set TOKEN_SERVICE_REDIS_URL")
    _prepare_metrics_dir(server)
    _metrics_listener = settings.metrics_listener


def when_ready(server: Any) -> None:
    """TOKEN_SERVICE_METRICS=host:port: the master serves the workers' sum there (the app serves no /metrics)."""
    if _metrics_listener is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry)
    start_http_server(_metrics_listener[1], _metrics_listener[0], registry=registry)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges leave the sum (its counters stay: a scrape must never see them fall)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the private metrics directory this file created (a SIGKILLed master leaves it behind)."""
    _remove_metrics_dir(anywhere=True)  # only the master runs on_exit (its pid changed if it daemonized)


def _stop(server: Any, message: str) -> None:
    if getattr(server, "pidfile", None) is not None:
        server.pidfile.unlink()
    _fail(message)
