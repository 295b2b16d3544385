"""The managed ring's rules: statuses derived from stored times, the signer, max-age, the schedule."""

from __future__ import annotations

from token_service.ring import KeyTimes, jwks_max_age, next_change, rotation_due, signing_kid, states

H = 930  # max TTL + skew


def statuses(keys, now):
    return {s.times.kid: s.status for s in states(keys, now, H)}


A = KeyTimes("a", "ES256", created_at=0, activates_at=0)
B = KeyTimes("b", "ES256", created_at=100, activates_at=700)


def test_one_key_signs_alone():
    assert statuses([A], 50) == {"a": "current"}
    assert signing_kid(states([A], 50, H)) == "a"


def test_a_staged_key_is_next_until_it_activates_then_the_old_one_retires():
    assert statuses([A, B], 699) == {"a": "current", "b": "next"}
    assert signing_kid(states([A, B], 699, H)) == "a"
    assert statuses([A, B], 700) == {"a": "retiring", "b": "current"}
    assert signing_kid(states([A, B], 700, H)) == "b"
    assert statuses([A, B], 700 + H - 1) == {"a": "retiring", "b": "current"}
    assert statuses([A, B], 700 + H) == {"b": "current"}


def test_retires_at_is_the_successors_activation():
    by_kid = {s.times.kid: s for s in states([A, B], 10, H)}
    assert by_kid["a"].retires_at == 700 and by_kid["b"].retires_at is None


def test_a_revoked_key_never_signs_and_leaves_after_the_horizon():
    revoked = KeyTimes("a", "ES256", 0, 0, revoked_at=50)
    assert statuses([revoked], 60) == {"a": "revoked"}
    assert signing_kid(states([revoked], 60, H)) is None
    assert statuses([revoked], 50 + H) == {}


def test_max_age_shortens_before_a_stage_change():
    current = states([A, B], 600, H)
    assert next_change(current, 600) == 100
    assert jwks_max_age(300, current, 600) == 100
    assert jwks_max_age(300, states([A], 600, H), 600) == 300
    retiring = states([A, B], 700 + H - 20, H)
    assert jwks_max_age(300, retiring, 700 + H - 20) == 20


def test_rotation_is_due_when_the_signer_is_older_than_the_period_and_nothing_is_staged():
    assert not rotation_due(states([A], 99, H), 99, 100)
    assert rotation_due(states([A], 100, H), 100, 100)
    assert not rotation_due(states([A, B], 650, H), 650, 100)  # a successor is staged
    assert not rotation_due(states([A], 10**9, H), 10**9, None)  # schedule off
    assert rotation_due([], 0, None)  # no signer at all


def test_revoking_the_signer_never_brings_its_predecessor_back():
    revoked_b = KeyTimes("b", "ES256", 100, 700, revoked_at=2000)
    assert statuses([A, revoked_b], 2001) == {"b": "revoked"}  # a is gone for good: no signer until a successor
    assert signing_kid(states([A, revoked_b], 2001, H)) is None


def test_a_staged_key_revoked_before_it_signed_does_not_retire_the_signer():
    staged_then_revoked = KeyTimes("b", "ES256", 100, 700, revoked_at=600)
    assert statuses([A, staged_then_revoked], 800) == {"a": "current", "b": "revoked"}


def test_a_successor_added_in_the_second_of_the_revocation_signs():
    revoked_first = KeyTimes("zz", "ES256", 0, 0, revoked_at=0)
    fresh = KeyTimes("aa", "ES256", 0, 0)  # same second; sorts before the revoked key by kid
    assert statuses([revoked_first, fresh], 0.5) == {"aa": "current", "zz": "revoked"}
