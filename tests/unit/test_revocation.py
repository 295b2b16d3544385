"""Revocation rules: what an entry covers, the iat of tokens minted after a watermark, expiry of entries."""

from __future__ import annotations

import re

import pytest

from token_service.claims import AccessClaims
from token_service.revocation import (
    REVOCATION_TYPES,
    WATERMARK_TYPES,
    Marker,
    Revocation,
    covers,
    expiry_of,
    issue_time_after,
    mint_targets,
    new_revocation_id,
    targets_of,
)

NOW = 1_700_000_000


def claims(iat: int = NOW) -> AccessClaims:
    return AccessClaims(iss="http://localhost:8000", aud="persona-api", sub="user-42", persona_id="support-bot",
                        scopes=("chat:read",), iat=iat, nbf=iat, exp=iat + 900, jti="jti-1", client_id="AbCdEfGh12345678")


@pytest.mark.parametrize("rtype", sorted(WATERMARK_TYPES))
def test_watermark_covers_tokens_issued_at_or_before_it(rtype: str) -> None:
    marker = Marker(revocation_id="rev_1", revoked_at=NOW)
    target = (rtype, "v")
    assert covers(target, marker, claims(iat=NOW - 1000))  # type: ignore[arg-type]
    assert covers(target, marker, claims(iat=NOW - 1))  # type: ignore[arg-type]
    assert covers(target, marker, claims(iat=NOW))  # type: ignore[arg-type]
    assert not covers(target, marker, claims(iat=NOW + 1))  # type: ignore[arg-type]
    assert not covers(target, marker, claims(iat=NOW + 1000))  # type: ignore[arg-type]


@pytest.mark.parametrize("rtype", ["jti", "kid"])
def test_jti_and_kid_entries_cover_whatever_their_iat(rtype: str) -> None:
    marker = Marker(revocation_id="rev_1", revoked_at=NOW)
    for iat in (NOW - 1000, NOW, NOW + 1, NOW + 1000):
        assert covers((rtype, "v"), marker, claims(iat=iat))  # type: ignore[arg-type]


def test_watermark_types() -> None:
    assert WATERMARK_TYPES == {"sub", "personaId", "client_id"}
    assert set(REVOCATION_TYPES) == WATERMARK_TYPES | {"jti", "kid"}


def test_issue_time_is_now_without_a_marker() -> None:
    assert issue_time_after(NOW, []) == NOW
    assert issue_time_after(NOW, [None, None, None]) == NOW


def test_issue_time_ignores_markers_before_now() -> None:
    assert issue_time_after(NOW, [Marker("rev_1", NOW - 1), None, Marker("rev_2", NOW - 500)]) == NOW


def test_issue_time_moves_past_a_marker_at_now() -> None:
    assert issue_time_after(NOW, [None, Marker("rev_1", NOW), None]) == NOW + 1


def test_issue_time_moves_past_a_marker_after_now() -> None:
    """Another instance's clock may be ahead: the new token must still not be covered."""
    assert issue_time_after(NOW, [Marker("rev_1", NOW + 3)]) == NOW + 4
    assert issue_time_after(NOW, [Marker("rev_1", NOW + 3), Marker("rev_2", NOW + 7), Marker("rev_3", NOW)]) == NOW + 8


@pytest.mark.parametrize("revoked_at", [NOW - 1, NOW, NOW + 5])
def test_a_token_issued_after_the_markers_is_never_covered(revoked_at: int) -> None:
    markers = [Marker("rev_1", revoked_at)]
    iat = issue_time_after(NOW, markers)  # type: ignore[arg-type]
    for rtype in WATERMARK_TYPES:
        assert not covers((rtype, "v"), markers[0], claims(iat=iat))  # type: ignore[arg-type]


def test_expiry_of_kid_is_never() -> None:
    assert expiry_of("kid", NOW, 930) is None
    assert expiry_of("kid", NOW, 930, token_exp=NOW + 10, clock_skew=30) is None


@pytest.mark.parametrize("rtype", sorted(WATERMARK_TYPES))
def test_expiry_of_a_watermark_is_the_horizon(rtype: str) -> None:
    assert expiry_of(rtype, NOW, 930) == NOW + 930  # type: ignore[arg-type]
    assert expiry_of(rtype, NOW, 930, token_exp=NOW + 10, clock_skew=30) == NOW + 930  # type: ignore[arg-type]


def test_expiry_of_a_jti_of_an_unknown_token_is_the_horizon() -> None:
    assert expiry_of("jti", NOW, 930) == NOW + 930


def test_expiry_of_a_jti_of_a_known_token_is_its_exp_plus_skew() -> None:
    assert expiry_of("jti", NOW, 930, token_exp=NOW + 600, clock_skew=30) == NOW + 630
    assert expiry_of("jti", NOW, 930, token_exp=NOW + 600) == NOW + 600


def test_expiry_of_a_jti_of_an_already_expired_token_is_not_before_the_revocation() -> None:
    assert expiry_of("jti", NOW, 930, token_exp=NOW - 5000, clock_skew=30) == NOW


def test_targets_of_in_their_fixed_order() -> None:
    assert targets_of(claims(), "kid-1") == (
        ("jti", "jti-1"), ("sub", "user-42"), ("personaId", "support-bot"), ("client_id", "AbCdEfGh12345678"), ("kid", "kid-1"),
    )


def test_mint_targets() -> None:
    assert mint_targets("user-42", "support-bot", "AbCdEfGh12345678") == (
        ("sub", "user-42"), ("personaId", "support-bot"), ("client_id", "AbCdEfGh12345678"),
    )


def test_revocation_to_dict() -> None:
    entry = Revocation(id="rev_1", type="sub", value="user-42", reason=None, revoked_at=NOW, expires_at=NOW + 930)
    assert entry.to_dict() == {"id": "rev_1", "type": "sub", "value": "user-42", "reason": None, "revoked_at": NOW,
                               "expires_at": NOW + 930}


def test_revocation_ids_are_random() -> None:
    ids = {new_revocation_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(re.fullmatch(r"rev_[0-9a-f]{20}", rid) for rid in ids)


def test_a_jti_entrys_id_carries_its_bucket() -> None:
    from token_service.jti_buckets import JTI_SHARDS, bucket_of_id, place_of
    from token_service.revocation import jti_digest

    ids = {new_revocation_id(("jti", f"jti-{n}")) for n in range(300)}
    assert len(ids) == 300 and all(re.fullmatch(r"rev_[0-9a-f]{20}", rid) for rid in ids)
    rid = new_revocation_id(("jti", "jti-1"))
    assert rid.endswith(jti_digest("jti-1")[:2].hex())
    assert bucket_of_id(rid) == (place_of("jti-1")[0], jti_digest("jti-1")[:2])
    assert place_of("jti-1")[0] == f"{{ts}}:rev:j:{int.from_bytes(jti_digest('jti-1')[:2], 'big') % JTI_SHARDS}"
    assert len({new_revocation_id(("jti", "same"))[-4:] for _ in range(20)}) == 1  # same jti: same tail
    assert len({new_revocation_id(("sub", "same"))[-4:] for _ in range(50)}) > 1  # other types: random
    for foreign in ("rev_1", "rev_" + "G" * 20, "rev_" + "A" * 20, "x" * 24):
        assert bucket_of_id(foreign) is None


def test_the_place_of_a_jti_is_a_stored_format() -> None:
    """Entries already in Redis are found through this placement: a change of the digest or of JTI_SHARDS would
    send lookups to the wrong bucket (a revoked token accepted). Changing it needs a migration."""
    from token_service.jti_buckets import JTI_SHARDS, place_of

    assert JTI_SHARDS == 16384
    bucket, field = place_of("0b1f4c1e-6f7e-4c39-9a55-3f1f2c8e8d21")
    assert (bucket, field.hex()) == ("{ts}:rev:j:16121", "3ef9fb57b999be88e5d006a1be881755")
