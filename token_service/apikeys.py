"""API keys: their text format and their stored record (pure; storage lives in ``stores``).

Text: ``<kind>_<id>_<secret><checksum>``, e.g. ``sk_3fJ9aQ0bX2mK7pLw_<43 chars><6 chars>``:
- ``kind`` is ``pk`` (public), ``sk`` (secret) or ``ak`` (admin), so scanners and humans see what leaked;
- ``id`` is 16 base62 characters (the key's id, also the ``client_id`` of the tokens it mints);
- ``secret`` is 43 base62 characters: 256 bits from ``secrets``;
- ``checksum`` is the CRC32 of everything before it, 6 base62 characters (as GitHub's ``ghp_`` tokens),
  so a mistyped or truncated key is refused without a store lookup and scanners can skip false hits.
Only ``sha256(text)`` is stored; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass, field, replace
from typing import Literal

from token_service import sealing

KeyKind = Literal["public", "secret", "admin"]
PREFIX_OF: dict[KeyKind, str] = {"public": "pk", "secret": "sk", "admin": "ak"}
KIND_OF: dict[str, KeyKind] = {prefix: kind for kind, prefix in PREFIX_OF.items()}
KEY_ID_RE = re.compile(r"^[0-9A-Za-z]{16}\Z")
_KEY_RE = re.compile(r"^(pk|sk|ak)_([0-9A-Za-z]{16})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})\Z")  # \Z: no trailing newline
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BOOTSTRAP_ID = "bootstrap"
PERMISSIONS = ("introspect",)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def _random_base62(width: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(width))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), 6)


def new_key_id() -> str:
    """A fresh key id: 16 base62 characters (~95 bits)."""
    return _random_base62(16)


def generate_key_text(kind: KeyKind, key_id: str) -> str:
    """A new key's full text for ``kind`` and ``key_id``; shown to the operator once, never stored."""
    body = f"{PREFIX_OF[kind]}_{key_id}_{_random_base62(43)}"
    return body + _checksum(body)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key text that is well formed and whose checksum holds (not yet known to exist)."""

    kind: KeyKind
    key_id: str
    digest: bytes = field(repr=False)


def parse_key_text(text: str) -> ParsedKey | None:
    """The kind, id and digest of a well-formed key text; None when malformed or the checksum fails."""
    match = _KEY_RE.match(text)
    if match is None:
        return None
    prefix, key_id, secret, checksum = match.groups()
    body = f"{prefix}_{key_id}_{secret}"
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    return ParsedKey(kind=KIND_OF[prefix], key_id=key_id, digest=digest_of(text))


def digest_of(text: str) -> bytes:
    """SHA-256 of a key's text: what is stored instead of the key (256-bit secrets need no slow hash)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def seal(text: str, key_encryption_key: bytes, key_id: str) -> bytes:
    """A secret key's text encrypted under the key-encryption key (AES-256-GCM, the key id as
    associated data, so a sealed text cannot be moved to another key's record)."""
    return sealing.seal(text.encode("ascii"), key_encryption_key, "api-key", key_id)


def unseal(sealed: bytes, key_encryption_key: bytes, key_id: str) -> str | None:
    """The text of a sealed key, or None when it does not decrypt (another KEK, or tampered)."""
    plain = sealing.unseal(sealed, key_encryption_key, "api-key", key_id)
    return None if plain is None else plain.decode("ascii")


def digests_match(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a, b)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's stored record: its settings and the digest of its text (never the text)."""

    id: str
    type: KeyKind
    name: str | None
    personas: tuple[str, ...]
    scopes: tuple[str, ...]
    origins: tuple[str, ...]
    permissions: tuple[str, ...]
    created_at: int
    expires_at: int | None
    digest: bytes = field(repr=False)
    revoked_at: int | None = None
    last_used_at: int | None = None
    rotated_from: str | None = None
    rotated_to: str | None = None
    """Set on a key that has been rotated: the id of its successor (a key is rotated once)."""
    sealed: bytes | None = field(default=None, repr=False)
    """Secret keys only, when a key-encryption key is configured: the text, sealed (for signed requests)."""

    def usable(self, now: float) -> bool:
        """True while the key is neither revoked nor expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def allows_persona(self, persona_id: str) -> bool:
        """True when the key may mint for ``persona_id``."""
        return "*" in self.personas or persona_id in self.personas

    def with_last_used(self, at: int) -> ApiKey:
        """A copy with ``last_used_at`` set."""
        return replace(self, last_used_at=at)

    def metadata(self) -> dict[str, object]:
        """The key as the admin API shows it: never the text or its digest."""
        data: dict[str, object] = {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "personas": list(self.personas),
            "scopes": list(self.scopes),
            "origins": list(self.origins),
            "permissions": list(self.permissions),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }
        if self.rotated_from:
            data["rotated_from"] = self.rotated_from
        return data
