"""Verifier: signature and claims from the service's JWKS (a real gunicorn instance), requirements, the
JWKS cache, and the import without Flask."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.e2e.servers import ROOT
from tests.verifier.conftest import AUDIENCE, ISSUER, Service
from token_service.claims import AccessClaims
from token_service.keys import KeyMaterialError, KeyRing, SigningKey
from token_service.revocation import Marker, Target
from token_service.tokens import TokenCodec
from token_service.verifier import (
    KeysUnavailable,
    RevocationUnavailable,
    TokenInsufficient,
    TokenInvalid,
    Verifier,
)


class NoRevocations:
    """A source with nothing revoked (signature and claims tests)."""

    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        return [None for _ in targets]

    def close(self) -> None:
        pass


class DownRevocations(NoRevocations):
    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        raise RevocationUnavailable("Revocations cannot be checked: test.")


@pytest.fixture
def verifier(live: Service) -> Iterator[Verifier]:
    v = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=NoRevocations())
    yield v
    v.close()


def test_the_verifier_imports_without_flask() -> None:
    code = ("import sys; sys.modules['flask'] = None; sys.modules['werkzeug'] = None\n"
            "import token_service.verifier as v\n"
            "from token_service.verifier import Verifier, FeedRevocations, RedisRevocations, protect, require_token\n"
            "assert 'flask' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_valid_token_gives_its_claims(live: Service, verifier: Verifier) -> None:
    claims = verifier.verify(live.mint(sub="alice"), persona_id="support-bot", scopes=("chat:read",))
    assert (claims.sub, claims.persona_id, claims.iss, claims.aud) == ("alice", "support-bot", ISSUER, AUDIENCE)


def test_requirements_are_403(live: Service, verifier: Verifier) -> None:
    token = live.mint(scopes=["chat:read"])
    with pytest.raises(TokenInsufficient) as persona:
        verifier.verify(token, persona_id="sales-bot")
    assert persona.value.status_code == 403 and "sales-bot" in persona.value.description
    with pytest.raises(TokenInsufficient) as scope:
        verifier.verify(token, scopes=("chat:read", "chat:write"))
    assert 'scope="chat:read chat:write"' in scope.value.headers["WWW-Authenticate"]
    assert token not in str(scope.value) and token not in str(persona.value)


@pytest.mark.parametrize("mutate", ["garbage", "signature", "audience"])
def test_bad_tokens_are_invalid_without_the_token_in_the_message(live: Service, mutate: str) -> None:
    token = live.mint()
    audience = AUDIENCE
    if mutate == "garbage":
        token = "not.a.jwt"
    elif mutate == "signature":
        head, payload, signature = token.split(".")
        token = f"{head}.{payload}.{signature[:-4]}AAAA"
    else:
        audience = "another-api"
    v = Verifier(ISSUER, audience, live.jwks_url, revocations=NoRevocations())
    with pytest.raises(TokenInvalid) as refused:
        v.verify(token)
    expected = {"garbage": "malformed", "signature": "bad_signature", "audience": "wrong_audience"}[mutate]
    assert refused.value.code == expected
    assert refused.value.status_code == 401 and refused.value.error == "invalid_token"
    assert token not in str(refused.value) and token not in refused.value.headers["WWW-Authenticate"]


def test_an_unknown_kid_refetches_the_jwks_at_most_once_per_interval(live: Service) -> None:
    ticks = [1000.0]
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=NoRevocations(), jwks_refresh_interval=60,
                        monotonic=lambda: ticks[0])
    verifier.verify(live.mint())
    assert verifier.keys.fetches == 1
    stranger = SigningKey.generate("ES256")
    now = int(time.time())
    claims = AccessClaims(iss=ISSUER, aud=AUDIENCE, sub="mallory", persona_id="support-bot", scopes=("chat:read",),
                          iat=now, nbf=now, exp=now + 300, jti="j-1", client_id="x")
    forged = TokenCodec(ISSUER, AUDIENCE, 30).encode(claims, stranger)
    def refuse_forged() -> None:
        with pytest.raises(TokenInvalid) as refused:
            verifier.verify(forged)
        assert refused.value.code == "unknown_key"

    refuse_forged()
    assert verifier.keys.fetches == 1  # fetched within the interval: no refetch yet
    ticks[0] += 61
    for _ in range(5):
        refuse_forged()
    assert verifier.keys.fetches == 2  # one refetch for the unknown kid, then throttled
    ticks[0] += 30
    refuse_forged()
    verifier.verify(live.mint())
    assert verifier.keys.fetches == 2


def test_an_unreachable_jwks_is_503_and_cached_keys_stay_usable(live: Service, closed_port: int) -> None:
    down = Verifier(ISSUER, AUDIENCE, f"http://127.0.0.1:{closed_port}/jwks", revocations=NoRevocations(), http_timeout=1)
    with pytest.raises(KeysUnavailable):
        down.verify(live.mint())
    calls: list[int] = []
    fetch_ok = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=NoRevocations()).keys._fetch

    def flaky() -> bytes:
        calls.append(1)
        if len(calls) > 1:
            raise KeysUnavailable("The JWKS cannot be fetched (test).")
        return fetch_ok()

    cached = Verifier(ISSUER, AUDIENCE, "http://unused.invalid/", revocations=NoRevocations(), fetch=flaky,
                      jwks_refresh_interval=0, jwks_max_age=0)
    token = live.mint()
    cached.verify(token)
    cached.verify(token)  # refetch fails: the cached keys still verify
    assert len(calls) == 2


def test_revocations_that_cannot_be_checked_refuse_the_token(live: Service) -> None:
    v = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=DownRevocations())
    with pytest.raises(RevocationUnavailable) as refused:
        v.verify(live.mint())
    assert refused.value.status_code == 503


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_a_ring_from_a_jwks_verifies_what_the_private_key_signed(alg: str) -> None:
    key = SigningKey.generate(alg)  # type: ignore[arg-type]
    ring = KeyRing.from_jwks(KeyRing.single(key).jwks())
    assert ring.signing is None and [k.kid for k in ring.keys] == [key.kid]
    now = int(time.time())
    claims = AccessClaims(iss=ISSUER, aud=AUDIENCE, sub="u", persona_id="p", scopes=(), iat=now, nbf=now, exp=now + 60,
                          jti="j", client_id="c")
    codec = TokenCodec(ISSUER, AUDIENCE, 30)
    assert codec.verify(codec.encode(claims, key), ring, now) == claims


def test_unusable_jwks_members_are_skipped() -> None:
    good = SigningKey.generate("ES256").public_jwk
    private = {**SigningKey.generate("ES256").public_jwk, "d": "AAAA"}
    wrong_alg = {**SigningKey.generate("ES256").public_jwk, "alg": "HS256"}
    mismatched = {**SigningKey.generate("EdDSA").public_jwk, "alg": "ES256"}
    encryption = {**SigningKey.generate("ES256").public_jwk, "use": "enc"}
    ring = KeyRing.from_jwks({"keys": [good, private, wrong_alg, mismatched, encryption, "junk", {"kty": "EC"}]})
    assert [k.kid for k in ring.keys] == [good["kid"]]
    with pytest.raises(KeyMaterialError):
        KeyRing.from_jwks({"nokeys": []})
