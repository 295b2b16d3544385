"""The verified-token cache of the codec: a repeated token skips the signature check, and nothing else.

The signature checks are counted by wrapping PyJWT's algorithm objects (the real primitive still runs)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.unit.test_tokens import AUDIENCE, ISSUER, NOW, SKEW, access_claims, codes
from token_service.keys import KeyRing, SigningKey
from token_service.tokens import TokenCodec


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture(scope="module")
def other() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture
def ring(key: SigningKey) -> KeyRing:
    return KeyRing.single(key)




def cached_codec(size: int = 100) -> TokenCodec:
    return TokenCodec(ISSUER, AUDIENCE, SKEW, cache_size=size)


def token_for(key: SigningKey, **changes: Any) -> str:
    return TokenCodec(ISSUER, AUDIENCE, SKEW).encode(access_claims(**changes), key)


def test_a_repeated_token_is_checked_once_and_gets_the_same_verdict(ring: KeyRing, key: SigningKey,
                                                                    signature_checks: list[bytes]) -> None:
    codec, token = cached_codec(), token_for(key)
    first = codec.inspect(token, ring, NOW)
    again = [codec.inspect(token, ring, NOW + i) for i in range(1, 5)]
    assert first.valid and len(signature_checks) == 1
    for verdict in again:
        assert verdict == first


def test_an_expired_cached_token_is_refused(ring: KeyRing, key: SigningKey) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, ring, NOW).valid
    late = codec.inspect(token, ring, NOW + 900 + SKEW)
    assert codes(late) == ["expired"]
    assert codec.cache is not None and len(codec.cache) == 0  # expired entries leave the cache


def test_time_checks_apply_to_cached_tokens_when_the_clock_goes_back(ring: KeyRing, key: SigningKey) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, ring, NOW).valid
    assert codes(codec.inspect(token, ring, NOW - SKEW - 1)) == ["not_yet_valid"]


def test_a_cached_token_whose_key_left_the_ring_is_refused(key: SigningKey, other: SigningKey, ring: KeyRing) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, ring, NOW).valid
    assert codes(codec.inspect(token, KeyRing.single(other), NOW)) == ["unknown_key"]


def test_a_cached_token_whose_kid_now_names_another_key_is_checked_again(key: SigningKey, other: SigningKey, ring: KeyRing,
                                                                        signature_checks: list[bytes]) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, ring, NOW).valid
    impostor = SigningKey(kid=key.kid, alg="ES256", public_key=other.public_key)  # same kid, other key material
    assert codes(codec.inspect(token, KeyRing.single(impostor), NOW)) == ["bad_signature"]
    assert len(signature_checks) == 2
    assert codec.inspect(token, ring, NOW).valid  # and the original key verifies it again from scratch
    assert len(signature_checks) == 3


def test_an_equal_key_of_a_rebuilt_ring_keeps_the_entry(key: SigningKey, signature_checks: list[bytes]) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, KeyRing.single(key), NOW).valid
    rebuilt = KeyRing.from_jwks({"keys": [key.public_jwk]})  # a JWKS refetch builds new key objects
    assert codec.inspect(token, rebuilt, NOW).valid
    assert len(signature_checks) == 1


def test_a_token_differing_in_one_character_is_not_a_hit(ring: KeyRing, key: SigningKey, signature_checks: list[bytes]) -> None:
    codec, token = cached_codec(), token_for(key)
    assert codec.inspect(token, ring, NOW).valid
    middle = len(token) - 20  # inside the signature: still canonical base64url
    spoiled = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
    assert codes(codec.inspect(spoiled, ring, NOW)) == ["bad_signature"]
    assert len(signature_checks) == 2


def test_refused_tokens_are_not_cached(ring: KeyRing, key: SigningKey, other: SigningKey, signature_checks: list[bytes]) -> None:
    codec = cached_codec()
    forged = token_for(other)  # signed by a key outside the ring, relabelled with the ring's kid below
    header, payload, signature = forged.split(".")
    relabelled = ".".join((token_for(key).split(".")[0], payload, signature))
    wrong_audience = TokenCodec(ISSUER, "elsewhere", SKEW).encode(access_claims(aud="elsewhere"), key)
    for _ in range(3):
        assert codes(codec.inspect(relabelled, ring, NOW)) == ["bad_signature"]
        assert codes(codec.inspect(wrong_audience, ring, NOW)) == ["wrong_audience"]
    assert len(signature_checks) == 6
    assert codec.cache is not None and len(codec.cache) == 0


def test_the_cache_is_bounded_least_recently_used_first(ring: KeyRing, key: SigningKey, signature_checks: list[bytes]) -> None:
    codec = cached_codec(size=2)
    a, b, c = (token_for(key, jti=f"00000000-0000-4000-8000-00000000000{i}") for i in range(3))
    for token in (a, b, a, c):  # c evicts b, the least recently used
        assert codec.inspect(token, ring, NOW).valid
    assert codec.cache is not None and len(codec.cache) == 2
    checks = len(signature_checks)
    assert codec.inspect(a, ring, NOW).valid and codec.inspect(c, ring, NOW).valid
    assert len(signature_checks) == checks
    assert codec.inspect(b, ring, NOW).valid
    assert len(signature_checks) == checks + 1


def test_size_zero_turns_the_cache_off(ring: KeyRing, key: SigningKey, signature_checks: list[bytes]) -> None:
    codec, token = cached_codec(size=0), token_for(key)
    assert codec.cache is None
    for _ in range(3):
        assert codec.inspect(token, ring, NOW).valid
    assert len(signature_checks) == 3


def test_concurrent_use_stays_bounded_and_correct(ring: KeyRing, key: SigningKey) -> None:
    codec = cached_codec(size=8)
    tokens = [token_for(key, jti=f"00000000-0000-4000-8000-{i:012d}") for i in range(20)]
    failures: list[str] = []

    def work(offset: int) -> None:
        for i in range(200):
            token = tokens[(i + offset) % len(tokens)]
            verdict = codec.inspect(token, ring, NOW)
            if not verdict.valid or verdict.claims is None or verdict.claims.jti != access_claims(
                    jti=f"00000000-0000-4000-8000-{(i + offset) % len(tokens):012d}").jti:
                failures.append(token[-8:])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert codec.cache is not None and len(codec.cache) <= 8
