# syntax=docker/dockerfile:1
# The token service under gunicorn. Without TOKEN_SERVICE_REDIS_URL it runs on the embedded
# single-process stores and must then run one worker: docker run -e WEB_CONCURRENCY=1 ...
# (the start-up check refuses several workers on the embedded stores).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The same pinned install as `make run`; a layer of its own so that code changes reuse it. --require-hashes:
# every package, dependencies included, must match a hash in requirements.txt (`make lock`), so a tampered or
# unpinned download fails the build instead of entering the image.
COPY requirements.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements.txt

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

# Root-owned and read-only for the service user. gunicorn.conf.py (top level) only loads config/gunicorn.conf.py:
# it gives the same settings and start-up checks to a command that overrides CMD without `-c`
# (`docker run IMAGE gunicorn wsgi:app --workers 2`).
COPY token_service ./token_service
COPY config ./config
COPY wsgi.py gunicorn.conf.py ./

USER 10001:10001
EXPOSE 8000
# gunicorn's graceful shutdown: SIGTERM (Docker's default) lets the workers finish their requests for up to
# graceful_timeout (30 s); give `docker stop` / compose's stop_grace_period more than that (docs/operations/deployment.md).
STOPSIGNAL SIGTERM

# slim has no curl: ask with the interpreter (urlopen raises on anything but 2xx/3xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

CMD ["gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"]
