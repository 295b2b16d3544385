"""The claim set of an access token and the rules for its values (RFC 9068, API.md).

Pure: no I/O. ``persona_id`` here, ``personaId`` only in the JSON of a token or a body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

# \Z, not $: "$" also matches before a trailing newline, which would let "bot\n" through (and into headers).
PERSONA_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
SUB_RE = re.compile(r"^[!-~]{1,256}\Z")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
JTI_RE = re.compile(r"^[!-~]{1,256}\Z")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "personaId", "scope", "iat", "nbf", "exp", "jti", "client_id")


class ClaimsDict(TypedDict):
    """The JSON claim set of a token, exactly as signed."""

    iss: str
    aud: str
    sub: str
    personaId: str
    scope: str
    iat: int
    nbf: int
    exp: int
    jti: str
    client_id: str


def valid_persona_id(value: object) -> bool:
    """True when ``value`` is a personaId: 1 to 128 of A-Z a-z 0-9 . _ : -."""
    return isinstance(value, str) and PERSONA_ID_RE.match(value) is not None


def valid_sub(value: object) -> bool:
    """True when ``value`` is a subject: 1 to 256 visible ASCII characters, no space."""
    return isinstance(value, str) and SUB_RE.match(value) is not None


def valid_client_id(value: object) -> bool:
    """True when ``value`` is a credential id as put in ``client_id``."""
    return isinstance(value, str) and CLIENT_ID_RE.match(value) is not None


def valid_jti(value: object) -> bool:
    """True when ``value`` can be a token id (visible ASCII, at most 256 characters)."""
    return isinstance(value, str) and JTI_RE.match(value) is not None


def unmet_requirement(claims: AccessClaims, persona_id: str | None, scopes: Sequence[str]) -> str | None:
    """Why the claims do not meet a gateway's requirement (bound to ``persona_id``, carrying every one
    of ``scopes``), as a sentence for the refusal; None when they do."""
    if persona_id is not None and claims.persona_id != persona_id:
        return f"The token is not bound to persona {persona_id}."
    missing = [s for s in scopes if s not in claims.scopes]
    if missing:
        return f"The token lacks the scope {missing[0]}."
    return None


# A NumericDate is a non-negative JSON integer in the range every JSON parser reads exactly (I-JSON, RFC 7493
# §2.2): a huge exp that a gateway parsing numbers as doubles would round, or a negative one, is refused.
MAX_NUMERIC_DATE = 2**53 - 1


def _is_numeric_date(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_NUMERIC_DATE


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified (or about to be signed) claims of one access token."""

    iss: str
    aud: str
    sub: str
    persona_id: str
    scopes: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str
    client_id: str

    @property
    def scope(self) -> str:
        """Space-separated scopes (RFC 8693 ``scope``)."""
        return " ".join(self.scopes)

    def to_dict(self) -> ClaimsDict:
        """The JSON claim set, in the order it is signed."""
        return {
            "iss": self.iss,
            "aud": self.aud,
            "sub": self.sub,
            "personaId": self.persona_id,
            "scope": self.scope,
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "jti": self.jti,
            "client_id": self.client_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccessClaims | None:
        """Claims from a decoded payload, or None when one is missing, extra or of the wrong type."""
        if set(data) != set(REQUIRED_CLAIMS):
            return None
        for name in ("iss", "aud", "scope", "jti"):
            if not isinstance(data[name], str):
                return None
        for name in ("iat", "nbf", "exp"):
            if not _is_numeric_date(data[name]):
                return None
        if not (valid_sub(data["sub"]) and valid_persona_id(data["personaId"]) and valid_client_id(data["client_id"])):
            return None
        if not valid_jti(data["jti"]):
            return None
        scopes = tuple(data["scope"].split(" ")) if data["scope"] else ()
        if any(not s for s in scopes):
            return None
        return cls(
            iss=data["iss"], aud=data["aud"], sub=data["sub"], persona_id=data["personaId"], scopes=scopes,
            iat=data["iat"], nbf=data["nbf"], exp=data["exp"], jti=data["jti"], client_id=data["client_id"],
        )
