"""``FeedRevocations``: a local copy of the revocations in force, kept by polling the service's
``GET /v1/revocations/feed`` (API.md), for verifiers that cannot reach the service's Redis.

The first poll (no ``since``) answers every revocation in force; later polls pass the last
``next_cursor`` and apply what was made (added) or lifted (removed) since. A background thread polls
every ``poll_interval`` seconds. The copy is *fresh* for ``staleness_bound`` seconds after the start of the
last successful poll, measured on the local monotonic clock (the request's start, not its answer: what the
service answers is complete up to at least then; ``complete_as_of`` is kept for operators). Once the
copy is older than the bound, or before the first poll succeeded, every token is refused
(RevocationsStale, a 503), as the contract requires.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from token_service.revocation import REVOCATION_TYPES, Marker, Target
from token_service.verifier.core import require_http
from token_service.verifier.errors import RevocationsStale

USER_AGENT = "persona-token-service verifier"
MAX_FEED_BYTES = 16 * 1024 * 1024
log = logging.getLogger("token_service.verifier")


class FeedError(Exception):
    """A poll failed; the message is safe to log."""


class FeedRevocations:
    """A RevocationSource polling the revocation feed (see the module docstring)."""

    def __init__(self, base_url: str, api_key: str, poll_interval: float = 5.0, staleness_bound: float = 30.0,
                 http_timeout: float = 5.0, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, start: bool = True):
        if staleness_bound <= poll_interval:
            raise ValueError("staleness_bound must be longer than poll_interval")
        require_http(base_url)
        self._url = base_url.rstrip("/") + "/v1/revocations/feed"
        self._api_key = api_key
        self._poll_interval = poll_interval
        self._staleness_bound = staleness_bound
        self._http_timeout = http_timeout
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._entries: dict[Target, dict[str, int]] = {}  # target -> {revocation id: revoked_at}
        self._where: dict[str, tuple[Target, int | None]] = {}  # revocation id -> (target, expires_at)
        self._cursor: str | None = None
        self._fresh_at: float | None = None
        self.complete_as_of: int | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="token-service-revocation-feed", daemon=True)
            self._thread.start()

    # -- the check --------------------------------------------------------------------------------

    def age(self) -> float | None:
        """Seconds since the start of the last successful poll (None: none yet)."""
        fresh_at = self._fresh_at
        return None if fresh_at is None else self._monotonic() - fresh_at

    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        """See RevocationSource.markers; RevocationsStale once the copy is older than the bound."""
        age = self.age()
        if age is None or age > self._staleness_bound:
            raise RevocationsStale("The revocation list is not current; tokens cannot be checked right now.")
        result: list[Marker | None] = []
        with self._lock:
            for target in targets:
                entries = self._entries.get(target)
                if not entries:
                    result.append(None)
                    continue
                rid = max(entries, key=lambda i: entries[i])
                result.append(Marker(revocation_id=rid, revoked_at=entries[rid]))
        return result

    # -- polling ----------------------------------------------------------------------------------

    def _get(self, since: str | None) -> dict[str, Any]:
        url = self._url if since is None else f"{self._url}?{urllib.parse.urlencode({'since': since})}"
        request = urllib.request.Request(url, headers={  # noqa: S310 - http(s) only, checked at construction
            "Authorization": f"Bearer {self._api_key}", "Accept": "application/json", "User-Agent": USER_AGENT,
        })
        try:
            with urllib.request.urlopen(request, timeout=self._http_timeout) as response:  # noqa: S310 - configured URL
                body = response.read(MAX_FEED_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise FeedError(f"the feed answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FeedError(f"the feed cannot be reached ({type(exc).__name__})") from None
        if len(body) > MAX_FEED_BYTES:
            raise FeedError("the feed answer is too large")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FeedError("the feed answer is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list) \
                or not isinstance(document.get("next_cursor"), str):
            raise FeedError("the feed answer lacks items or next_cursor")
        return document

    def poll(self) -> None:
        """One poll; FeedError when it fails (the copy then ages). Items are checked before any is applied."""
        started = self._monotonic()
        since = self._cursor
        try:
            document = self._get(since)
        except FeedError as exc:
            if since is not None and str(exc) == "the feed answered 400":
                self._cursor = None  # a cursor the service no longer reads: start over from the full list
            raise
        changes = [self._parse(item) for item in document["items"]]
        now = self._wall()
        with self._lock:
            if since is None:
                self._entries.clear()
                self._where.clear()
            for rid, target, at, expires_at, lifted in changes:
                self._remove(rid)
                if not lifted and (expires_at is None or expires_at > now):
                    self._where[rid] = (target, expires_at)
                    self._entries.setdefault(target, {})[rid] = at
            for rid in [rid for rid, (_, exp) in self._where.items() if exp is not None and exp <= now]:
                self._remove(rid)  # every token it covered has expired: forget it, as the service does
            self._cursor = document["next_cursor"]
            self._fresh_at = started
            complete = document.get("complete_as_of")
            self.complete_as_of = complete if isinstance(complete, int) else None
            self.polls += 1

    def _remove(self, rid: str) -> None:
        found = self._where.pop(rid, None)
        if found is not None:
            entries = self._entries.get(found[0], {})
            entries.pop(rid, None)
            if not entries:
                self._entries.pop(found[0], None)

    @staticmethod
    def _parse(item: Any) -> tuple[str, Target, int, int | None, bool]:
        if not isinstance(item, dict):
            raise FeedError("a feed item is not an object")
        rid, rtype, value, at, exp = item.get("id"), item.get("type"), item.get("value"), item.get("revoked_at"), item.get("expires_at")
        if not isinstance(rid, str) or rtype not in REVOCATION_TYPES or not isinstance(value, str) or not isinstance(at, int) \
                or not (exp is None or isinstance(exp, int)):
            raise FeedError("a feed item lacks id, type, value, revoked_at or expires_at")
        return rid, (rtype, value), at, exp, item.get("lifted") is True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except FeedError as exc:
                log.warning("revocation feed poll failed: %s", exc)
            self._stop.wait(self._poll_interval)

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
