"""What the use cases report as they happen, for the request log and the metrics (no I/O, no Flask).

The service calls an ``Events``; the default does nothing. The web layer installs one that notes the
request's facts (who authenticated, the token's verdict) and counts what is not tied to one answer.
Every value passed is from a bounded set: never a subject, a jti, a persona or a key id.
"""

from __future__ import annotations

from typing import Literal, Protocol

AuthFailure = Literal["invalid_credential", "missing", "unavailable"]
"""Why authentication failed: a credential an adapter refused, none at all, an adapter that could not check."""


class Events(Protocol):
    """Receives the service's events; implementations must be cheap and must not raise."""

    def authenticated(self, kind: str, client_id: str) -> None:
        """A caller authenticated: ``kind`` public/secret/admin/user, ``client_id`` its credential's id."""

    def authentication_failed(self, adapter: str, reason: AuthFailure) -> None:
        """Authentication failed; ``adapter`` is the configured adapter's name (``none`` when none decided)."""

    def token_checked(self, result: str) -> None:
        """A token was checked: ``valid`` or the first reason code (expired, revoked, bad_signature, ...)."""

    def revoked(self, rtype: str, by: str) -> None:
        """A revocation was stored: its type (jti, sub, personaId, client_id, kid) and ``admin`` or ``holder``."""


class NoEvents:
    """The default: nothing is noted."""

    def authenticated(self, kind: str, client_id: str) -> None:
        """See Events.authenticated."""

    def authentication_failed(self, adapter: str, reason: AuthFailure) -> None:
        """See Events.authentication_failed."""

    def token_checked(self, result: str) -> None:
        """See Events.token_checked."""

    def revoked(self, rtype: str, by: str) -> None:
        """See Events.revoked."""
