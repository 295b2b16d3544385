"""The ``session`` adapter: the product's own login session, checked by asking its "who am I" endpoint.

The credential is whatever the browser already sends the product: its ``Cookie`` header and/or its
``Authorization`` header (``TOKEN_SERVICE_SESSION_FORWARD``). The adapter forwards exactly those headers
(plus ``Accept`` and a sane ``X-Request-Id``) to ``TOKEN_SERVICE_SESSION_URL`` with a GET, never any other
header of the request, and maps the JSON answer to a ``user`` Principal. See docs/auth/session.md.

Decisions:
- None of the forwarded headers present: None (not mine; the next adapter may decide).
- A request with an ``Origin`` that is not in ``TOKEN_SERVICE_CORS_ORIGINS`` (``null`` included), or
  without ``Origin`` but with ``Sec-Fetch-Site: cross-site``: refused before the upstream is asked.
  A cookie rides along on cross-site requests; another site must not be able to mint with it.
- 200 with a JSON object holding a non-empty string subject: the Principal.
- Any 3xx (redirects are never followed: a redirect to the login page means "no session"), any 4xx,
  a subject that is not a valid ``sub`` (without a pepper): AuthenticationFailed (401).
- 5xx, any other status, timeout, connection refused, a body that is not a JSON object, lacks the
  subject, has fields of the wrong type or exceeds 64 KiB: AuthUnavailable (503, fail closed).

With ``authorization`` forwarded, an ``Authorization: Bearer`` value carrying one of this service's own
keys (``pk_``/``sk_``/``ak_`` API keys, the bootstrap admin key) is never forwarded: those are decided by
the ``api_key`` adapter, which should come first in ``TOKEN_SERVICE_AUTH_ADAPTERS``. Any other value
(an identity provider's token, say) goes to whichever adapter the chain asks first: with ``oidc`` before
``session``, a JWT from the provider is decided by ``oidc`` and never reaches the upstream.

The credential values are never logged, never put in a message, and never used as a cache key (the
cache is keyed by their SHA-256). Environment proxy variables are ignored: the credential goes straight
to the configured URL.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from token_service.auth.base import (
    AuthenticationFailed,
    AuthRequest,
    AuthUnavailable,
    Principal,
    bearer_credentials,
    pseudonymous_subject,
)
from token_service.claims import valid_sub
from token_service.clock import Clock
from token_service.config import SCOPE_RE, Settings

if TYPE_CHECKING:
    from token_service.auth import AdapterContext

log = logging.getLogger("token_service.auth.session")

MAX_BODY = 64 * 1024
CACHE_MAX_ENTRIES = 10_000
USER_AGENT = "persona-token-service session adapter"
_HEADER_NAMES = {"cookie": "Cookie", "authorization": "Authorization"}
_API_KEY_PREFIXES = ("pk_", "sk_", "ak_")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")  # as the web layer's: only a sane id is passed on
_PERSONA_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_MISSING = object()


class SessionCache:
    """Successful answers of the upstream, per process: {SHA-256 of the credentials: (expiry, Principal)}.

    Bounded (the oldest entry goes first when full); entries expire against the injected clock and are
    dropped lazily. Thread-safe (gunicorn's threaded workers share an adapter).
    """

    def __init__(self, lifetime: float, clock: Clock, max_entries: int = CACHE_MAX_ENTRIES):
        self._lifetime = lifetime
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        """The cached Principal for ``key`` while it is fresh, else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        """Remember ``principal`` for the cache lifetime, evicting the oldest entries beyond the bound."""
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self._lifetime, principal)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def keys(self) -> tuple[str, ...]:
        """The keys held now (hex digests), oldest first: for operators and tests, never a credential."""
        with self._lock:
            return tuple(self._entries)


def _opener() -> urllib.request.OpenerDirector:
    """An opener that speaks HTTP(S) only: no redirect handler (a 3xx is an answer), no proxy from the
    environment, no file:, ftp: or data: handlers."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _field(document: dict[str, Any], path: str) -> Any:
    """The value at ``path`` in ``document``: a top-level member of that exact name, else a dotted path; _MISSING when absent."""
    if path in document:
        return document[path]
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class SessionAdapter:
    """Authenticates a browser by its session with the product (cookie and/or Authorization header)."""

    name = "session"
    users_only = True  # authenticates end users only: not asked on admin or introspection endpoints

    def __init__(self, settings: Settings, clock: Clock):
        if settings.session_url is None:
            raise ValueError("TOKEN_SERVICE_SESSION_URL is not set")
        if urlsplit(settings.session_url).scheme not in ("http", "https"):
            raise ValueError("TOKEN_SERVICE_SESSION_URL must be an http:// or https:// URL")
        unknown = [name for name in settings.session_forward if name not in _HEADER_NAMES]
        if not settings.session_forward or unknown:
            raise ValueError("TOKEN_SERVICE_SESSION_FORWARD must list cookie and/or authorization")
        self._url = settings.session_url
        self._timeout = settings.session_timeout
        self._forward = settings.session_forward
        self._origins = frozenset(settings.cors_origins)
        self._subject_field = settings.session_subject_field
        self._personas_field = settings.session_personas_field
        self._scopes_field = settings.session_scopes_field
        self._personas = settings.session_personas
        self._scopes = settings.session_scopes if settings.session_scopes is not None else settings.default_scopes
        self._client_id = settings.session_client_id
        self._pepper = settings.subject_pepper
        self._admin_digest = hashlib.sha256(settings.admin_key.encode()).digest() if settings.admin_key else None
        self._opener = _opener()
        self.cache = SessionCache(settings.session_cache_seconds, clock) if settings.session_cache_seconds > 0 else None

    @classmethod
    def from_context(cls, context: AdapterContext) -> SessionAdapter:
        """The adapter for an AdapterContext (settings and clock)."""
        return cls(context.settings, context.clock)

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """See AuthAdapter.authenticate."""
        credentials = self._credentials(request)
        if not credentials:
            return None
        self._check_site(request)
        key = _cache_key(credentials)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        principal = self._principal(self._ask(credentials, request.header("x-request-id")))
        if self.cache is not None:
            self.cache.put(key, principal)
        return principal

    # -- the request ----------------------------------------------------------------------------

    def _credentials(self, request: AuthRequest) -> dict[str, str]:
        """{header name: value} of the forwarded headers the request carries (empty ones ignored)."""
        found = {}
        for name in self._forward:
            value = request.header(name)
            if not value or not value.strip():
                continue
            if name == "authorization" and self._carries_own_key(value):
                continue  # this service's keys are decided locally and never leave it
            found[_HEADER_NAMES[name]] = value
        return found

    def _carries_own_key(self, value: str) -> bool:
        """True when the value carries an API key (under any scheme) or is ``Bearer <the bootstrap admin key>``."""
        if any(word.startswith(_API_KEY_PREFIXES) for word in value.split()):
            return True
        credentials = bearer_credentials(value)
        if credentials is None:
            return False
        digest = hashlib.sha256(credentials.encode("utf-8", "surrogateescape")).digest()
        return self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest)

    def _check_site(self, request: AuthRequest) -> None:
        origin = request.header("origin")
        if origin is not None:
            if origin not in self._origins:
                raise AuthenticationFailed("A session may not be used from this origin.")
        elif (request.header("sec-fetch-site") or "").strip().lower() == "cross-site":
            raise AuthenticationFailed("A session may not be used from another site.")

    def _ask(self, credentials: dict[str, str], request_id: str | None) -> dict[str, Any]:
        """The upstream's JSON object for these credentials; AuthenticationFailed or AuthUnavailable."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **credentials}
        if request_id is not None and _REQUEST_ID_RE.match(request_id):
            headers["X-Request-Id"] = request_id
        # The scheme is checked in __init__, and the opener has HTTP(S) handlers only.
        upstream = urllib.request.Request(self._url, headers=headers, method="GET")  # noqa: S310
        try:
            with self._opener.open(upstream, timeout=self._timeout) as response:
                status = response.status
                body = response.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            status, body = exc.code, b""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            # Timeout, refused, reset, a broken answer: the reason names no credential, but keep to the type.
            log.warning("session upstream cannot be reached (%s)", type(exc).__name__)
            raise AuthUnavailable("the session upstream cannot be reached") from None
        if status in (401, 403):
            raise AuthenticationFailed("The session is not valid.")
        if 300 <= status < 500:
            raise AuthenticationFailed(f"The session could not be confirmed (the session service answered {status}).")
        if status != 200:
            log.warning("session upstream answered %d", status)
            raise AuthUnavailable(f"the session upstream answered {status}")
        if len(body) > MAX_BODY:
            raise self._broken(f"an answer over {MAX_BODY} bytes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise self._broken("an answer that is not JSON") from None
        if not isinstance(document, dict):
            raise self._broken("an answer that is not a JSON object")
        return document

    @staticmethod
    def _broken(what: str) -> AuthUnavailable:
        log.warning("session upstream sent %s", what)
        return AuthUnavailable(f"the session upstream sent {what}")

    # -- the answer -----------------------------------------------------------------------------

    def _principal(self, document: dict[str, Any]) -> Principal:
        value = _field(document, self._subject_field)
        if not isinstance(value, str) or not value:
            raise self._broken(f"no string {self._subject_field!r} field")
        if self._pepper is not None:
            subject = pseudonymous_subject(self._pepper, self._url, value)
        elif valid_sub(value):
            subject = value
        else:
            raise AuthenticationFailed(
                "The session's user id cannot be a token subject (1 to 256 visible ASCII characters); "
                "the operator can set TOKEN_SERVICE_SUBJECT_PEPPER."
            )
        # A field the answer does not carry (or carries as null) falls back to the setting, as when it is not configured.
        personas = self._list(document, self._personas_field, personas=True)
        scopes = self._list(document, self._scopes_field, personas=False)
        return Principal(
            kind="user", client_id=self._client_id, subject=subject,
            personas=self._personas if personas is None else personas,
            scopes=self._scopes if scopes is None else scopes,
        )

    def _list(self, document: dict[str, Any], path: str | None, personas: bool) -> tuple[str, ...] | None:
        """A list-of-strings field (scopes may also be one space-separated string); None when absent or null.

        Only well-formed items are kept: persona ids (``*`` is honoured from configuration only, never
        from the upstream) or scope tokens. A value of another type is a broken answer.
        """
        if path is None:
            return None
        value = _field(document, path)
        if value is _MISSING or value is None:
            return None
        if not personas and isinstance(value, str):
            value = value.split(" ")
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._broken(f"a {path!r} field that is not a list of strings")
        pattern = _PERSONA_RE if personas else SCOPE_RE
        return tuple(dict.fromkeys(item for item in value if pattern.match(item)))


def _cache_key(credentials: dict[str, str]) -> str:
    """SHA-256 (hex) of the forwarded headers, names and values length-prefixed (no two sets collide)."""
    digest = hashlib.sha256()
    for name in sorted(credentials):
        for part in (name.lower(), credentials[name]):
            encoded = part.encode("utf-8", "surrogateescape")
            digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.hexdigest()
