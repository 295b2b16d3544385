"""The local Verifier's verified-token cache: a repeated token skips the signature check, never the
revocation source, the key check or the expiry (tokens from the live service, its real JWKS)."""

from __future__ import annotations

from collections.abc import Sequence

import jwt
import pytest

from tests.verifier.conftest import AUDIENCE, ISSUER, Service
from token_service.revocation import Marker, Target
from token_service.verifier import TokenInvalid, Verifier


class CountingRevocations:
    """A revocation source answering from a dict the test fills, counting the questions."""

    def __init__(self) -> None:
        self.entries: dict[Target, Marker] = {}
        self.calls = 0

    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        self.calls += 1
        return [self.entries.get(tuple(t)) for t in targets]  # type: ignore[arg-type]

    def close(self) -> None:
        pass




@pytest.mark.parametrize("target", ["jti", "sub", "kid"])
def test_a_repeated_token_is_signature_checked_once_and_revocation_checked_every_time(
        live: Service, signature_checks: list[bytes], target: str) -> None:
    source = CountingRevocations()
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=source)
    token = live.mint()
    claims = [verifier.verify(token) for _ in range(4)]
    assert all(c == claims[0] for c in claims)
    assert len(signature_checks) == 1 and source.calls == 4
    value = jwt.get_unverified_header(token)["kid"] if target == "kid" else getattr(claims[0], target)
    source.entries[(target, value)] = Marker(revocation_id="rev-1", revoked_at=claims[0].iat)
    with pytest.raises(TokenInvalid) as refused:
        verifier.verify(token)
    assert refused.value.code == ("key_revoked" if target == "kid" else "revoked")


def test_a_cached_token_is_refused_once_expired(live: Service) -> None:
    now = [0.0]
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=CountingRevocations(), clock=lambda: now[0])
    token = live.mint()
    now[0] = float(jwt.decode(token, options={"verify_signature": False})["iat"])
    verifier.verify(token)
    now[0] += 900 + 30
    with pytest.raises(TokenInvalid) as refused:
        verifier.verify(token)
    assert refused.value.code == "expired"


def test_cache_size_zero_checks_every_signature(live: Service, signature_checks: list[bytes]) -> None:
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=CountingRevocations(), cache_size=0)
    token = live.mint()
    for _ in range(3):
        verifier.verify(token)
    assert len(signature_checks) == 3
