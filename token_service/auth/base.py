"""The authentication interface: adapters turn a request into a Principal.

An adapter returns None (not my kind of credential), a Principal, or raises AuthenticationFailed (my
kind of credential, and bad). The chain asks each configured adapter in order; the first that does
not return None decides. Adapters see a framework-free AuthRequest, never Flask.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

PrincipalKind = Literal["public", "secret", "admin", "user"]
"""public/secret/admin: API keys (a signed request acts as its secret key); user: an end user
authenticated by an identity provider or an upstream session, minting for themself only."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What an adapter may look at: method, path, headers (lower-case names), raw body, client address."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)
    remote_addr: str | None = None

    def header(self, name: str) -> str | None:
        """A header's value by case-insensitive name, or None."""
        return self.headers.get(name.lower())

    @property
    def from_browser(self) -> bool:
        """API.md's test for a key *presented* by a browser: the request carries Origin or Sec-Fetch-Mode: cors."""
        mode = (self.header("sec-fetch-mode") or "").lower()
        return self.header("origin") is not None or mode == "cors"

    @property
    def from_browser_engine(self) -> bool:
        """A narrower test: Origin, or Sec-Fetch-Mode: cors *with* Sec-Fetch-Site (browsers send the Fetch
        Metadata headers together). Node's built-in fetch (undici) sends Sec-Fetch-Mode: cors alone on
        every request; signed requests from Node servers (the Persona guide's own example) must pass."""
        mode = (self.header("sec-fetch-mode") or "").lower()
        return self.header("origin") is not None or (mode == "cors" and self.header("sec-fetch-site") is not None)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may mint or do.

    ``client_id`` is the id of the credential (or adapter) and goes into the tokens it mints.
    ``subject`` is the user the tokens are for, when the credential fixes it (None: the caller
    names ``sub``, or an anonymous subject is generated for public keys).
    """

    kind: PrincipalKind
    client_id: str
    subject: str | None = None
    personas: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    may_name_sub: bool = False

    @property
    def is_admin(self) -> bool:
        """True for admin keys."""
        return self.kind == "admin"

    def allows_persona(self, persona_id: str) -> bool:
        """True when the principal may mint for ``persona_id``."""
        return "*" in self.personas or persona_id in self.personas

    def can_introspect(self) -> bool:
        """True for admin keys and secret keys granted ``introspect``."""
        return self.is_admin or (self.kind == "secret" and "introspect" in self.permissions)


class AuthenticationFailed(Exception):
    """The adapter's kind of credential was presented and is bad. The message is safe to show."""

    adapter: str | None = None
    """The name of the adapter that refused it (set by the chain; for the metrics)."""

    def __init__(self, description: str = "The credentials are not valid."):
        self.description = description
        super().__init__(description)


class AuthUnavailable(Exception):
    """The adapter could not decide: its dependency (a JWKS, an upstream) failed. The service answers
    503 and authenticates nobody (fail closed). The message is safe to log."""

    adapter: str | None = None
    """The name of the adapter that could not decide (set by the chain; for the metrics)."""


class AuthAdapter(Protocol):
    """One way of authenticating callers."""

    name: str

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """A Principal, or None when the request carries no credential of this kind.

        Raises AuthenticationFailed when the credential is of this kind and bad, AuthUnavailable when
        the adapter cannot check it now.
        """


def bearer_credentials(value: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` value (scheme case-insensitive), else None."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return None
    return credentials


def pseudonymous_subject(pepper: bytes, namespace: str, subject: str) -> str:
    """``u_`` + base64url(HMAC-SHA256(pepper, namespace NUL subject)): a stable subject that carries no
    personal data (an e-mail address never reaches a token), unlinkable across peppers and namespaces."""
    digest = hmac.new(pepper, f"{namespace}\0{subject}".encode(), hashlib.sha256).digest()
    return "u_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
