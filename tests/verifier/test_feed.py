"""FeedRevocations against a real gunicorn instance: revocations and lifts are applied, and every token
is refused once the copy is older than the staleness bound."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import token_parts
from tests.verifier.conftest import AUDIENCE, ISSUER, Service
from token_service.verifier import FeedRevocations, RevocationsStale, TokenInvalid, Verifier


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def feed(live: Service, ticks: Ticks) -> Iterator[FeedRevocations]:
    source = FeedRevocations(live.instance.base, live.secret(), poll_interval=5, staleness_bound=10, monotonic=ticks, start=False)
    yield source
    source.close()


def test_items_are_applied_and_lifted(live: Service, feed: FeedRevocations) -> None:
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=feed)
    old = live.revoke(sub="feed-old")  # in force before the first poll: comes with the full list
    first, second = live.mint(sub="feed-a"), live.mint(sub="feed-b")
    feed.poll()
    assert feed.complete_as_of is not None
    assert feed.markers([("sub", "feed-old")])[0] is not None
    verifier.verify(first)
    entry = live.revoke(jti=str(token_parts(first)[1]["jti"]))
    feed.poll()
    with pytest.raises(TokenInvalid) as refused:
        verifier.verify(first)
    assert refused.value.code == "revoked"
    verifier.verify(second)
    live.lift(entry["id"])
    live.lift(old["id"])
    feed.poll()
    verifier.verify(first)
    assert feed.markers([("sub", "feed-old")])[0] is None


def test_every_token_is_refused_once_the_copy_is_stale(live: Service, feed: FeedRevocations, ticks: Ticks) -> None:
    verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=feed)
    token = live.mint(sub="feed-stale")
    with pytest.raises(RevocationsStale):  # no poll yet
        verifier.verify(token)
    feed.poll()
    verifier.verify(token)
    ticks.now += 10
    verifier.verify(token)  # exactly at the bound: still fresh
    ticks.now += 0.5
    with pytest.raises(RevocationsStale) as refused:
        verifier.verify(token)
    assert refused.value.status_code == 503
    feed.poll()
    verifier.verify(token)


def test_the_background_poller_follows_the_feed(live: Service) -> None:
    feed = FeedRevocations(live.instance.base, live.secret(), poll_interval=0.05, staleness_bound=5)
    try:
        verifier = Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=feed)
        token = live.mint(sub="feed-bg")
        deadline = time.monotonic() + 10
        while feed.polls == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        verifier.verify(token)
        live.revoke(sub="feed-bg")
        while time.monotonic() < deadline:
            try:
                verifier.verify(token)
            except TokenInvalid:
                break
            time.sleep(0.02)
        with pytest.raises(TokenInvalid):
            verifier.verify(token)
    finally:
        feed.close()


def test_a_failing_poll_lets_the_copy_age(live: Service, closed_port: int, ticks: Ticks) -> None:
    feed = FeedRevocations(f"http://127.0.0.1:{closed_port}", "sk_whatever", poll_interval=1, staleness_bound=2,
                           monotonic=ticks, start=False)
    with pytest.raises(Exception, match="cannot be reached"):
        feed.poll()
    with pytest.raises(RevocationsStale):
        feed.markers([("jti", "x")])
    wrong_key = FeedRevocations(live.instance.base, "sk_not_a_key", poll_interval=1, staleness_bound=2, start=False)
    with pytest.raises(Exception, match="answered 401"):
        wrong_key.poll()
