"""The ``hmac`` adapter: requests signed with a secret key, as in the Persona security guide.

Headers: ``X-Key-Id`` (the key's id), ``X-Timestamp`` (Unix seconds) and ``X-Signature``: the hex
HMAC-SHA256, keyed with the secret key's full text, of the X-Timestamp bytes followed by the raw body
(the guide's ``generateSignature``, plus the key id). The server holds no key in clear: secret keys
created while a key-encryption key is configured carry their text sealed under it (``apikeys.seal``),
and it is unsealed here only to recompute the HMAC.

None of the three headers: not ours (None). Some but not all, or one malformed: refused without a
store lookup. Then, in order: the timestamp window, the key (a secret key with a sealed text), the
signature (constant-time), the key's validity, the replay cache (each signature once, on every
instance; fail closed), the browser check. A failure never names key text or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

from token_service.apikeys import KEY_ID_RE, ApiKey, digests_match, parse_key_text, unseal
from token_service.audit import AuditRecorder
from token_service.auth import AdapterContext
from token_service.auth.api_key import principal_of, record_use, treat_as_exposed
from token_service.auth.base import AuthenticationFailed, AuthRequest, Principal
from token_service.clock import Clock
from token_service.config import ConfigError
from token_service.stores.base import ApiKeyStore, ReplayCache

log = logging.getLogger("token_service.auth.hmac")

HEADERS = ("x-key-id", "x-timestamp", "x-signature")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}\Z")  # [0-9], not \d: ASCII digits only
_SIGNATURE_RE = re.compile(r"^[0-9A-Fa-f]{64}\Z")


def signature_of(key_text: str, timestamp: str, body: bytes) -> str:
    """The lower-case hex HMAC-SHA256 of ``timestamp`` followed by ``body``, keyed with the key's full text."""
    return hmac.new(key_text.encode("ascii"), timestamp.encode("ascii") + body, hashlib.sha256).hexdigest()


def fingerprint_of(key_id: str, signature: str) -> str:
    """What the replay cache records for a signature: a digest, so the store never holds a signature."""
    return hashlib.sha256(f"{key_id}:{signature}".encode("ascii")).hexdigest()


class HmacAdapter:
    """Authenticates requests signed with a secret key; a signed request acts as that key."""

    name = "hmac"

    def __init__(self, keys: ApiKeyStore, replays: ReplayCache, clock: Clock, key_encryption_key: bytes,
                 window: int = 300, revoke_from_browsers: bool = True, audit: AuditRecorder | None = None):
        self._keys = keys
        self._replays = replays
        self._clock = clock
        self._kek = key_encryption_key
        self._window = window
        self._revoke_from_browsers = revoke_from_browsers
        self._warned: set[str] = set()
        self._audit = audit

    @classmethod
    def from_context(cls, context: AdapterContext) -> HmacAdapter:
        """The adapter of an ``AdapterContext``; ConfigError without a key-encryption key."""
        settings = context.settings
        if settings.key_encryption_key is None:
            # load_settings refuses this too; Settings built in code reach here without it.
            raise ConfigError(
                "TOKEN_SERVICE_AUTH_ADAPTERS names hmac but TOKEN_SERVICE_KEY_ENCRYPTION_KEY is not set: "
                "signed requests are checked against secret keys kept encrypted under it"
            )
        return cls(context.stores.api_keys, context.stores.replays, context.clock, settings.key_encryption_key,
                   settings.signature_window, settings.revoke_keys_from_browsers, context.audit)

    @property
    def replay_ttl(self) -> int:
        """How long a used signature is remembered: longer than any timestamp stays inside the window."""
        return 2 * self._window + 1

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """See AuthAdapter.authenticate."""
        key_id, timestamp, signature = (request.header(name) for name in HEADERS)
        if key_id is None and timestamp is None and signature is None:
            return None
        if key_id is None or timestamp is None or signature is None:
            raise AuthenticationFailed("A signed request needs all three of X-Key-Id, X-Timestamp and X-Signature.")
        if not _TIMESTAMP_RE.match(timestamp):
            raise AuthenticationFailed("X-Timestamp must be Unix seconds (1 to 12 digits).")
        if not _SIGNATURE_RE.match(signature):
            raise AuthenticationFailed("X-Signature must be 64 hexadecimal characters (HMAC-SHA256).")
        if not KEY_ID_RE.match(key_id):
            raise AuthenticationFailed("X-Key-Id is not a key id.")
        now = self._clock()
        if abs(now - int(timestamp)) > self._window:
            raise AuthenticationFailed(
                f"X-Timestamp is outside the allowed window of {self._window} seconds; check the signing server's clock."
            )
        key = self._keys.get(key_id)
        if key is None or key.type != "secret":
            raise AuthenticationFailed("X-Key-Id does not name a secret key.")
        text = self._key_text(key)
        signature = signature.lower()
        if not hmac.compare_digest(signature_of(text, timestamp, request.body), signature):
            raise AuthenticationFailed("The signature does not match the request.")
        # Only a holder of the key learns its state, as with the api_key adapter.
        if not key.usable(now):
            raise AuthenticationFailed("The API key has expired or been revoked.")
        if not self._replays.first_use(fingerprint_of(key_id, signature), self.replay_ttl):
            raise AuthenticationFailed("This signature has already been used; sign every request anew.")
        if request.from_browser_engine:
            # The key signs in a browser, so the browser holds it: refuse, and by default revoke it.
            # Checked after the replay cache: replaying an observed request with Origin added cannot revoke a key.
            treat_as_exposed(self._keys, key, now, self._revoke_from_browsers, self._audit, request.remote_addr)
            raise AuthenticationFailed("Secret keys must never be used from a browser.")
        record_use(self._keys, key, now, self._audit, request.remote_addr)
        return principal_of(key)

    def _key_text(self, key: ApiKey) -> str:
        """The key's text, unsealed; AuthenticationFailed when it cannot sign."""
        if key.sealed is None:
            raise AuthenticationFailed(
                "This secret key was created without a key-encryption key, so it cannot sign requests; "
                "rotate or recreate it (keys created while TOKEN_SERVICE_KEY_ENCRYPTION_KEY is set can sign)."
            )
        text = unseal(key.sealed, self._kek, key.id)
        parsed = parse_key_text(text) if text is not None else None
        if text is None or parsed is None or parsed.key_id != key.id or not digests_match(parsed.digest, key.digest):
            # Another KEK than the one it was sealed under (or a tampered record): the operator must act.
            if key.id not in self._warned:  # once per key and process: callers must not be able to flood the log
                self._warned.add(key.id)
                log.warning("secret key %s cannot be unsealed with the configured key-encryption key", key.id)
            raise AuthenticationFailed(
                "This secret key cannot sign requests: it was sealed under another key-encryption key; rotate or recreate it."
            )
        return text
