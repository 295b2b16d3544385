"""One contract suite run against every store implementation: the embedded one and a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from token_service.apikeys import ApiKey, digest_of, generate_key_text, new_key_id
from token_service.jti_buckets import SWEEP_GRACE
from token_service.revocation import Marker, Revocation, new_revocation_id
from token_service.stores import Stores, StoreUnavailable, stores_from_url


@pytest.fixture
def stores(backend: str, request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Stores]:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    built = stores_from_url(url, clock)
    yield built
    close = getattr(built, "close", None)
    if close:
        close()


def every_page(stores: Stores, limit: int) -> tuple[list[Revocation], int]:
    """Every revocation in force, following the listing's cursors ``limit`` at a time, and the number of pages."""
    seen: list[Revocation] = []
    cursor, pages = None, 0
    while True:
        items, cursor = stores.revocations.page(cursor, limit)
        seen.extend(items)
        pages += 1
        if cursor is None:
            return seen, pages


def entry(clock: FakeClock, rtype: str = "jti", value: str = "j-1", ttl: int | None = 930, at: int | None = None) -> Revocation:
    revoked_at = int(clock()) if at is None else at
    return Revocation(
        id=new_revocation_id((rtype, value)), type=rtype, value=value, reason=None, revoked_at=revoked_at,  # type: ignore[arg-type]
        expires_at=None if ttl is None else revoked_at + ttl,
    )


def api_key(clock: FakeClock, kind: str = "secret", **changes: Any) -> ApiKey:
    key_id = new_key_id()
    fields: dict[str, Any] = dict(
        id=key_id, type=kind, name="k", personas=("support-bot",), scopes=("chat:read",),
        origins=("https://a.example",) if kind == "public" else (), permissions=(), created_at=int(clock()),
        expires_at=None, digest=digest_of(generate_key_text(kind, key_id)),  # type: ignore[arg-type]
    )
    fields.update(changes)
    return ApiKey(**fields)


class TestRevocationStore:
    def test_add_then_lookup_and_get(self, stores: Stores, clock: FakeClock) -> None:
        e = entry(clock)
        stores.revocations.add(e)
        assert stores.revocations.get(e.id) == e
        assert stores.revocations.lookup([("jti", "j-1"), ("jti", "other"), ("sub", "j-1")]) == [
            Marker(e.id, e.revoked_at), None, None,
        ]

    def test_lookup_reports_the_newest_watermark(self, stores: Stores, clock: FakeClock) -> None:
        old = entry(clock, "sub", "alice")
        clock.advance(5)
        new = entry(clock, "sub", "alice")
        stores.revocations.add(new)
        stores.revocations.add(old)  # added later, but older: the newer watermark stays in force
        assert stores.revocations.lookup([("sub", "alice")]) == [Marker(new.id, new.revoked_at)]

    def test_lift_restores_the_previous_watermark(self, stores: Stores, clock: FakeClock) -> None:
        old = entry(clock, "personaId", "p")
        clock.advance(5)
        new = entry(clock, "personaId", "p")
        stores.revocations.add(old)
        stores.revocations.add(new)
        assert stores.revocations.lift(new.id) == new
        assert stores.revocations.lookup([("personaId", "p")]) == [Marker(old.id, old.revoked_at)]
        assert stores.revocations.lift(old.id) == old
        assert stores.revocations.lookup([("personaId", "p")]) == [None]
        assert stores.revocations.lift(old.id) is None
        assert stores.revocations.get(old.id) is None

    def test_kid_entries_never_expire(self, stores: Stores, clock: FakeClock) -> None:
        e = entry(clock, "kid", "k1", ttl=None)
        stores.revocations.add(e)
        clock.advance(10 * 86400)
        assert stores.revocations.lookup([("kid", "k1")]) == [Marker(e.id, e.revoked_at)]

    def test_list_pages_oldest_first_with_an_opaque_cursor(self, stores: Stores, clock: FakeClock) -> None:
        made = []
        for i in range(7):
            e = entry(clock, "jti", f"j{i}")
            stores.revocations.add(e)
            made.append(e)
        seen, pages = every_page(stores, 3)
        assert seen == made and pages == 3

    def test_list_refuses_foreign_cursors(self, stores: Stores) -> None:
        for bad in ("nope", "czE=x", "MTIz"):
            with pytest.raises(ValueError):
                stores.revocations.page(bad, 10)

    def test_entries_are_forgotten_after_their_expiry(self, stores: Stores, clock: FakeClock, backend: str,
                                                     request: pytest.FixtureRequest) -> None:
        short = entry(clock, "jti", "gone", ttl=1)
        kept = entry(clock, "kid", "k", ttl=None)
        stores.revocations.add(short)
        stores.revocations.add(kept)
        if backend == "redis":
            time.sleep(1.2)  # Redis expires keys on its own clock; the fake clock only drives pruning
        clock.advance(2)
        assert stores.revocations.lookup([("jti", "gone")]) == [None]
        assert stores.revocations.get(short.id) is None
        stores.revocations.add(entry(clock, "jti", "later"))  # prunes the indexes
        items, _ = stores.revocations.page(None, 100)
        assert [e.value for e in items] == ["k", "later"]
        if backend == "redis":
            client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
            assert client.zscore("{ts}:rev:idx", short.id) is None
            assert client.exists("{ts}:rev:on:jti:gone") == 0
            client.close()

class TestApiKeyStore:
    def test_create_get_and_duplicate(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public")
        stores.api_keys.create(key)
        assert stores.api_keys.get(key.id) == key
        assert stores.api_keys.get("0" * 16) is None
        with pytest.raises(ValueError):
            stores.api_keys.create(key)

    def test_revoke_keeps_the_first_time(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock)
        stores.api_keys.create(key)
        first = stores.api_keys.revoke(key.id, 100)
        assert first is not None and first.revoked_at == 100
        again = stores.api_keys.revoke(key.id, 200)
        assert again is not None and again.revoked_at == 100
        assert stores.api_keys.revoke("nosuchkey0000000", 1) is None

    def test_touch_records_last_use(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock)
        stores.api_keys.create(key)
        stores.api_keys.touch(key.id, 1234)
        found = stores.api_keys.get(key.id)
        assert found is not None and found.last_used_at == 1234
        stores.api_keys.touch("nosuchkey0000000", 1)
        assert stores.api_keys.get("nosuchkey0000000") is None

    def test_list_pages_in_creation_order(self, stores: Stores, clock: FakeClock) -> None:
        made = [api_key(clock) for _ in range(5)]
        for key in made:
            stores.api_keys.create(key)
        first, cursor = stores.api_keys.page(None, 2)
        second, cursor2 = stores.api_keys.page(cursor, 2)
        third, cursor3 = stores.api_keys.page(cursor2, 2)
        assert first + second + third == made and cursor3 is None

    def test_origin_known_follows_live_public_keys(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public", origins=("https://chat.example",))
        stores.api_keys.create(key)
        assert stores.api_keys.origin_known("https://chat.example", clock())
        assert not stores.api_keys.origin_known("https://evil.example", clock())
        stores.api_keys.revoke(key.id, 1)
        assert not stores.api_keys.origin_known("https://chat.example", clock())

    def test_origin_of_an_expired_public_key_is_not_known(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public", origins=("https://old.example",), expires_at=int(clock()) + 60)
        stores.api_keys.create(key)
        assert stores.api_keys.origin_known("https://old.example", clock())
        clock.advance(61)
        assert not stores.api_keys.origin_known("https://old.example", clock())

    def test_secret_keys_add_no_origins(self, stores: Stores, clock: FakeClock) -> None:
        stores.api_keys.create(api_key(clock, "secret", origins=("https://x.example",)))
        assert not stores.api_keys.origin_known("https://x.example", clock())

    def test_touch_says_which_use_is_the_first(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock)
        stores.api_keys.create(key)
        assert stores.api_keys.touch(key.id, 100) is True
        assert stores.api_keys.touch(key.id, 200) is False
        found = stores.api_keys.get(key.id)
        assert found is not None and found.last_used_at == 200
        assert stores.api_keys.touch("nosuchkey0000000", 1) is False

    def test_set_expiry_brings_the_expiry_forward_and_never_later(self, stores: Stores, clock: FakeClock) -> None:
        now = int(clock())
        key = api_key(clock)
        stores.api_keys.create(key)
        moved = stores.api_keys.set_expiry(key.id, now + 600)
        assert moved is not None and moved.expires_at == now + 600
        assert moved == stores.api_keys.get(key.id)
        kept = stores.api_keys.set_expiry(key.id, now + 900)  # later: not extended
        assert kept is not None and kept.expires_at == now + 600
        earlier = stores.api_keys.set_expiry(key.id, now + 60)
        assert earlier is not None and earlier.expires_at == now + 60
        assert stores.api_keys.set_expiry("nosuchkey0000000", now) is None
        assert stores.api_keys.get("nosuchkey0000000") is None

    def test_set_expiry_keeps_the_rest_of_the_record(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public", expires_at=int(clock()) + 3600, rotated_from="0123456789abcdef")
        stores.api_keys.create(key)
        stores.api_keys.touch(key.id, 5)
        moved = stores.api_keys.set_expiry(key.id, int(clock()) + 10)
        assert moved == replace(key, expires_at=int(clock()) + 10, last_used_at=5)

    def test_set_expiry_moves_the_origins_of_a_public_key(self, stores: Stores, clock: FakeClock, backend: str,
                                                          request: pytest.FixtureRequest) -> None:
        key = api_key(clock, "public", origins=("https://rotating.example",))
        stores.api_keys.create(key)
        stores.api_keys.set_expiry(key.id, int(clock()) + 60)
        assert stores.api_keys.origin_known("https://rotating.example", clock())
        clock.advance(59)
        assert stores.api_keys.origin_known("https://rotating.example", clock())
        clock.advance(1)
        assert not stores.api_keys.origin_known("https://rotating.example", clock())
        if backend == "redis":
            client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
            assert client.zscore("{ts}:key:origin:https://rotating.example", key.id) == int(clock())
            client.close()

    def test_set_expiry_now_stops_a_public_keys_origins_at_once(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public", origins=("https://now.example",))
        stores.api_keys.create(key)
        stores.api_keys.set_expiry(key.id, int(clock()))
        assert not stores.api_keys.origin_known("https://now.example", clock())

    def test_set_expiry_does_not_bring_back_a_revoked_keys_origins(self, stores: Stores, clock: FakeClock) -> None:
        key = api_key(clock, "public", origins=("https://revoked.example",))
        stores.api_keys.create(key)
        stores.api_keys.revoke(key.id, int(clock()))
        moved = stores.api_keys.set_expiry(key.id, int(clock()) + 600)
        assert moved is not None and moved.revoked_at == int(clock()) and moved.expires_at == int(clock()) + 600
        assert not stores.api_keys.origin_known("https://revoked.example", clock())


class TestRateLimitStore:
    def test_allows_up_to_the_limit_then_refuses_until_the_window_ends(self, stores: Stores) -> None:
        clock = FakeClock(start=6000.0 + 15.5)  # 15.5 s into a 60-second window
        limits = _rebuilt(stores, clock).rate_limits
        for _ in range(10):
            allowed, retry_after = limits.hit("exposed:10.0.0.1", 60, 10)
            assert allowed and retry_after == 45
        assert limits.hit("exposed:10.0.0.1", 60, 10) == (False, 45)
        clock.advance(44)
        assert limits.hit("exposed:10.0.0.1", 60, 10) == (False, 1)
        clock.advance(0.5)  # the next window
        assert limits.hit("exposed:10.0.0.1", 60, 10) == (True, 60)

    def test_names_and_windows_are_counted_apart(self, stores: Stores, clock: FakeClock) -> None:
        limits = stores.rate_limits
        assert limits.hit("a", 60, 1)[0]
        assert not limits.hit("a", 60, 1)[0]
        assert limits.hit("b", 60, 1)[0]
        assert limits.hit("a", 3600, 1)[0]

    def test_retry_after_is_at_least_one_second(self, stores: Stores) -> None:
        clock = FakeClock(start=6059.9)
        limits = _rebuilt(stores, clock).rate_limits
        assert limits.hit("edge", 60, 0) == (False, 1)


def _rebuilt(stores: Stores, clock: FakeClock) -> Stores:
    """Stores of the same backend on another clock (the Redis ones share the fixture's server)."""
    client = getattr(stores, "client", None)
    if client is None:
        return stores_from_url(None, clock)
    from token_service.stores.redis import RedisStores

    return RedisStores(client, clock)


def test_redis_rate_counters_are_forgotten_after_their_window(redis_url: str) -> None:
    """Redis layout: a counter expires once its window is over (in real time), so the store stays bounded."""
    stores = stores_from_url(redis_url, FakeClock())
    stores.rate_limits.hit("exposed:10.0.0.9", 1, 5)
    client = redis.Redis.from_url(redis_url)
    [name] = list(client.scan_iter("{ts}:rate:*"))
    assert 0 < client.pttl(name) <= 2000
    time.sleep(2.1)
    assert client.exists(name) == 0
    client.close()


def test_unreachable_redis_raises_store_unavailable(clock: FakeClock) -> None:
    from tests.conftest import free_port

    stores = stores_from_url(f"redis://127.0.0.1:{free_port()}/0", clock, connect_timeout=0.2, socket_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        stores.ping()
    with pytest.raises(StoreUnavailable):
        stores.revocations.lookup([("jti", "x")])
    with pytest.raises(StoreUnavailable):
        stores.api_keys.get("0" * 16)


def test_every_redis_key_of_a_watermark_carries_a_ttl(redis_url: str, clock: FakeClock) -> None:
    """Redis layout: the store stays bounded because each entry's keys expire with it."""
    stores = stores_from_url(redis_url, clock)
    stores.revocations.add(entry(clock, "sub", "bob", ttl=930))
    client = redis.Redis.from_url(redis_url)
    checked = 0
    for key in client.scan_iter("{ts}:rev:*"):
        name = key.decode()
        if name.endswith((":idx", ":exp", ":seq")):
            continue
        assert 0 < client.pttl(key) <= 930_000, name
        checked += 1
    assert checked == 3  # the record, the marker, the ids of the target
    client.close()


def test_a_lost_redis_cluster_node_is_store_unavailable(tmp_path, clock: FakeClock) -> None:
    """Cluster errors are not RedisErrors in redis-py: they must still become StoreUnavailable (503)."""
    from tests.conftest import RedisServer, free_port

    # the cluster bus port must be given: the default (port + 10000) is out of range for high ports
    server = RedisServer(tmp_path, extra=("--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
                                          "--cluster-port", str(free_port())))
    server.start()
    try:
        admin = server.client()
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while admin.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
            assert time.monotonic() < deadline, "the one-node cluster did not come up"
            time.sleep(0.05)
        admin.close()
        stores = stores_from_url(f"cluster://127.0.0.1:{server.port}", clock, connect_timeout=0.2, socket_timeout=0.2)
        stores.revocations.add(entry(clock, "sub", "carol"))
        assert stores.revocations.lookup([("sub", "carol")])[0] is not None
        jti = entry(clock, "jti", "carol-token")  # the jti scripts and the listing's pipeline work on a cluster too
        stores.revocations.add(jti)
        assert stores.revocations.lookup([("jti", "carol-token"), ("sub", "carol")])[0] == Marker(jti.id, jti.revoked_at)
        assert [e.value for e in stores.revocations.page(None, 10)[0]] == ["carol", "carol-token"]
        assert len(stores.revocations.changes(None)[0]) == 2
        assert stores.revocations.get(jti.id) == jti and stores.revocations.lift(jti.id) == jti
        server.stop()
        with pytest.raises(StoreUnavailable):
            stores.revocations.lookup([("sub", "carol")])
    finally:
        server.stop()


class TestRevocationChanges:
    """The feed's view of the store: entries made or lifted after a sequence number."""

    def test_without_a_cursor_every_entry_in_force(self, stores: Stores, clock: FakeClock) -> None:
        first, second = entry(clock, "jti", "a"), entry(clock, "sub", "b")
        stores.revocations.add(first)
        stores.revocations.add(second)
        stores.revocations.lift(first.id)
        items, seq = stores.revocations.changes(None)
        assert items == [(second, False)] and seq == 3

    def test_after_a_cursor_what_was_made_and_lifted_since(self, stores: Stores, clock: FakeClock) -> None:
        old = entry(clock, "jti", "old")
        stores.revocations.add(old)
        _, cursor = stores.revocations.changes(None)
        new = entry(clock, "personaId", "p")
        stores.revocations.add(new)
        stores.revocations.lift(old.id)
        items, seq = stores.revocations.changes(cursor)
        assert items == [(new, False), (old, True)] and seq == cursor + 2
        assert stores.revocations.changes(seq) == ([], seq)

    def test_expired_entries_and_tombstones_leave_the_feed(self, stores: Stores, clock: FakeClock) -> None:
        short = entry(clock, "jti", "s", ttl=5)
        stores.revocations.add(short)
        stores.revocations.lift(short.id)
        assert stores.revocations.changes(0)[0] == [(short, True)]
        clock.advance(6)
        assert stores.revocations.changes(0)[0] == []


def same_bucket_jti(value: str, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """Another jti whose entry lands in the same Redis bucket as ``value``'s (a search over a few thousand digests)."""
    from token_service.jti_buckets import place_of

    bucket = place_of(value)[0]
    for n in range(1_000_000):
        candidate = f"{value}-{n}"
        if candidate not in taken and place_of(candidate)[0] == bucket:
            return candidate
    raise AssertionError("no jti found for the bucket")


def _redis(request: pytest.FixtureRequest) -> Any:
    return redis.Redis.from_url(request.getfixturevalue("redis_url"))


class TestJtiEntries:
    """jti entries, which the Redis store packs into hash buckets and a stream (stores/redis.py, jti_buckets)."""

    def test_many_jti_entries_spread_over_buckets_are_listed_in_order_across_pages(
            self, stores: Stores, clock: FakeClock, backend: str, request: pytest.FixtureRequest) -> None:
        made = []
        for i in range(45):
            e = entry(clock, "sub" if i % 9 == 4 else "jti", f"many-{i}", at=int(clock()) + i % 3)
            stores.revocations.add(e)
            made.append(e)
        seen, pages = every_page(stores, 7)
        assert seen == made and pages == 7
        if backend == "redis":
            client = _redis(request)
            buckets = list(client.scan_iter("{ts}:rev:j:*"))
            assert len(buckets) >= 30  # 40 jtis over 16,384 buckets
            assert sum(client.hlen(b) for b in buckets) == 40 and client.xlen("{ts}:rev:jlog") == 40
            assert len(list(client.scan_iter("{ts}:rev:rec:*"))) == 5  # the sub entries only
            client.close()

    def test_the_same_jti_revoked_twice_then_one_lifted(self, stores: Stores, clock: FakeClock, backend: str,
                                                         request: pytest.FixtureRequest) -> None:
        first = entry(clock, "jti", "twice")
        clock.advance(5)
        second = entry(clock, "jti", "twice", ttl=60)
        stores.revocations.add(first)
        stores.revocations.add(second)
        assert stores.revocations.lookup([("jti", "twice")]) == [Marker(second.id, second.revoked_at)]
        assert stores.revocations.page(None, 10)[0] == [first, second]
        assert stores.revocations.lift(second.id) == second
        assert stores.revocations.lookup([("jti", "twice")]) == [Marker(first.id, first.revoked_at)]
        assert stores.revocations.get(first.id) == first and stores.revocations.get(second.id) is None
        assert stores.revocations.page(None, 10)[0] == [first]
        clock.advance(61)  # past the lifted one's expiry, not the other's: still in force
        assert stores.revocations.lookup([("jti", "twice")]) == [Marker(first.id, first.revoked_at)]
        assert stores.revocations.lift(first.id) == first
        assert stores.revocations.lookup([("jti", "twice")]) == [None]
        if backend == "redis":
            client = _redis(request)
            assert list(client.scan_iter("{ts}:rev:j:*")) == [] and client.xlen("{ts}:rev:jlog") == 0
            client.close()

    def test_a_newer_entry_for_a_jti_that_expires_sooner_leaves_the_older_in_force(self, stores: Stores, clock: FakeClock) -> None:
        older = entry(clock, "jti", "overlap", ttl=900)
        clock.advance(1)
        newer = entry(clock, "jti", "overlap", ttl=10)
        stores.revocations.add(older)
        stores.revocations.add(newer)
        clock.advance(11)
        assert stores.revocations.lookup([("jti", "overlap")]) == [Marker(older.id, older.revoked_at)]

    def test_get_and_lift_by_id(self, stores: Stores, clock: FakeClock) -> None:
        e = replace(entry(clock, "jti", "by-id"), reason="lost laptop")
        holder = replace(entry(clock, "jti", "by-id-2"), reason="revoked by its holder")
        neighbour = entry(clock, "jti", same_bucket_jti("by-id"))
        for made in (e, holder, neighbour):
            stores.revocations.add(made)
        assert stores.revocations.get(e.id) == e and stores.revocations.get(holder.id) == holder
        assert stores.revocations.get(neighbour.id) == neighbour
        # an id of the right form naming the same bucket, and the same field's two bytes, but no entry
        assert stores.revocations.get(e.id[:4] + "0" * 16 + e.id[-4:]) is None
        assert stores.revocations.lift(e.id[:4] + "0" * 16 + e.id[-4:]) is None
        assert stores.revocations.get("rev_nothex") is None and stores.revocations.lift("rev_nothex") is None
        assert stores.revocations.lift(e.id) == e
        assert stores.revocations.get(e.id) is None and stores.revocations.lift(e.id) is None
        assert stores.revocations.lookup([("jti", "by-id"), ("jti", neighbour.value)]) == [
            None, Marker(neighbour.id, neighbour.revoked_at)]
        assert stores.revocations.page(None, 10)[0] == [holder, neighbour]

    def test_feed_orders_jti_and_other_entries_by_sequence(self, stores: Stores, clock: FakeClock) -> None:
        first = [entry(clock, "jti", "f1"), entry(clock, "sub", "f2"), entry(clock, "jti", "f3"), entry(clock, "personaId", "f4")]
        for made in first:
            stores.revocations.add(made)
        items, cursor = stores.revocations.changes(None)
        assert items == [(e, False) for e in first] and cursor == 4
        later = [entry(clock, "client_id", "f5"), entry(clock, "jti", "f6"), entry(clock, "jti", "f7"), entry(clock, "sub", "f8")]
        for made in later:
            stores.revocations.add(made)
        stores.revocations.lift(first[2].id)
        stores.revocations.lift(first[1].id)
        items, seq = stores.revocations.changes(cursor)
        assert items == [(e, False) for e in later] + [(first[2], True), (first[1], True)] and seq == cursor + 6
        assert stores.revocations.changes(None)[0] == [(first[0], False), (first[3], False)] + [(e, False) for e in later]


def test_redis_jti_buckets_and_stream_shrink_back(redis_url: str, clock: FakeClock) -> None:
    """Each add sweeps its bucket's expired fields and trims the stream's expired head; TTLs follow the latest expiry."""
    from token_service.jti_buckets import place_of

    stores = stores_from_url(redis_url, clock)
    client = redis.Redis.from_url(redis_url)
    values = ["sweep-a"]
    for _ in range(3):
        values.append(same_bucket_jti("sweep-a", set(values)))
    bucket = place_of("sweep-a")[0]
    for value in values[:3]:
        stores.revocations.add(entry(clock, "jti", value, ttl=30))
    assert client.hlen(bucket) == 3 and client.xlen("{ts}:rev:jlog") == 3
    assert 29_000 < client.pttl(bucket) <= 30_000 and 29_000 < client.pttl("{ts}:rev:jlog") <= 30_000
    clock.advance(31)  # the three have expired (on the store's clock; Redis still holds them)
    assert stores.revocations.lookup([("jti", v) for v in values[:3]]) == [None] * 3
    stores.revocations.add(entry(clock, "jti", "elsewhere", ttl=600))  # another bucket: this one is not swept
    assert client.hlen(bucket) == 3
    clock.advance(SWEEP_GRACE)  # an add sweeps only entries expired for longer than the grace
    kept = entry(clock, "jti", values[3], ttl=600)
    stores.revocations.add(kept)
    assert client.hgetall(bucket) and client.hlen(bucket) == 1  # the three swept by the add
    assert client.xlen("{ts}:rev:jlog") == 2  # and trimmed off the stream's head ("elsewhere" and this one stay)
    assert 599_000 < client.pttl(bucket) <= 600_000 and 599_000 < client.pttl("{ts}:rev:jlog") <= 600_000
    assert [e.value for e in stores.revocations.page(None, 10)[0]] == ["elsewhere", values[3]]
    stores.revocations.add(entry(clock, "jti", "short-one", ttl=1))  # a shorter expiry never shortens a TTL
    assert client.pttl("{ts}:rev:jlog") > 599_000
    client.close()


def test_an_instance_whose_clock_runs_ahead_sweeps_no_entry_another_still_enforces(redis_url: str, clock: FakeClock) -> None:
    """The sweep runs on the adding instance's clock: one running ahead (by less than SWEEP_GRACE) must not drop an
    entry that is live on the others' clocks, though it has expired on its own."""
    from token_service.jti_buckets import place_of

    ahead = FakeClock(clock() + SWEEP_GRACE - 1)
    stores, fast = stores_from_url(redis_url, clock), stores_from_url(redis_url, ahead)
    live = entry(clock, "jti", "live-one", ttl=30)  # expired 29 s ago on the fast clock
    stores.revocations.add(live)
    other = same_bucket_jti("live-one", {"live-one"})
    fast.revocations.add(entry(ahead, "jti", other, ttl=100))
    client = redis.Redis.from_url(redis_url)
    assert client.hlen(place_of("live-one")[0]) == 2
    assert stores.revocations.lookup([("jti", "live-one")]) == [Marker(live.id, live.revoked_at)]
    client.close()


def test_redis_jti_keys_vanish_without_traffic(redis_url: str) -> None:
    """With no add after them, a bucket and the stream expire with their last entry (Redis's own clock)."""
    clock = FakeClock()  # the current second + 0.25: Redis's TTL is 1.75 s from the add
    stores = stores_from_url(redis_url, clock)
    client = redis.Redis.from_url(redis_url)
    stores.revocations.add(entry(clock, "jti", "fleeting", ttl=2))
    assert len(list(client.scan_iter("{ts}:rev:j:*"))) == 1 and client.exists("{ts}:rev:jlog") == 1
    time.sleep(2.1)
    assert list(client.scan_iter("{ts}:rev:*")) == [b"{ts}:rev:seq"]
    client.close()


def test_redis_jti_entries_of_the_old_layout_are_honoured(redis_url: str, clock: FakeClock) -> None:
    """Upgrade: a jti entry written by the version before the buckets (record, marker and ids keys, the two
    indexes) keeps refusing its token, is listed, fed, found and lifted; alongside new entries for the same jti."""
    import secrets

    from token_service.revocation import jti_digest
    from token_service.stores.redis import _ADD

    stores = stores_from_url(redis_url, clock)
    client = redis.Redis.from_url(redis_url)
    tail = jti_digest("legacy")[:2]
    old_id = "rev_" + secrets.token_hex(8) + bytes([tail[0], tail[1] ^ 1]).hex()  # an old random id (not this tail)
    old = replace(entry(clock, "jti", "legacy", ttl=900), id=old_id)
    # written exactly as the previous version did (its _ADD script, unchanged, still serves the other types)
    keys = [f"{{ts}}:rev:rec:{old.id}", "{ts}:rev:idx", "{ts}:rev:exp", "{ts}:rev:on:jti:legacy", "{ts}:rev:ids:jti:legacy",
            "{ts}:rev:seq"]
    client.register_script(_ADD)(keys=keys, args=[old.id, json.dumps(old.to_dict()), old.revoked_at, int(clock()), 900_000,
                                                  old.expires_at])
    assert client.exists("{ts}:rev:on:jti:legacy") == 1
    assert stores.revocations.lookup([("jti", "legacy")]) == [Marker(old.id, old.revoked_at)]
    assert stores.revocations.get(old.id) == old
    clock.advance(1)
    new = entry(clock, "jti", "legacy")
    other = entry(clock, "jti", "fresh")
    stores.revocations.add(new)
    stores.revocations.add(other)
    assert stores.revocations.lookup([("jti", "legacy"), ("jti", "fresh")]) == [
        Marker(new.id, new.revoked_at), Marker(other.id, other.revoked_at)]
    assert stores.revocations.page(None, 10)[0] == [old, new, other]
    assert stores.revocations.changes(None)[0] == [(old, False), (new, False), (other, False)]
    assert stores.revocations.lift(new.id) == new
    assert stores.revocations.lookup([("jti", "legacy")]) == [Marker(old.id, old.revoked_at)]  # the old one still counts
    assert stores.revocations.lift(old.id) == old
    assert stores.revocations.lookup([("jti", "legacy")]) == [None]
    assert client.exists("{ts}:rev:on:jti:legacy", f"{{ts}}:rev:rec:{old.id}") == 0
    client.close()


def test_redis_adds_sweep_every_bucket_round_robin_and_trim_a_burst_off_the_stream(redis_url: str, clock: FakeClock) -> None:
    """After a burst, expired entries leave buckets no later add lands in: each add also sweeps SWEEP_EACH_ADD
    buckets round-robin, so JTI_SHARDS / SWEEP_EACH_ADD adds sweep them all; and the stream's head is trimmed by
    up to 256 expired entries an add."""
    from token_service.jti_buckets import JTI_SHARDS, SWEEP_EACH_ADD, place_of

    stores = stores_from_url(redis_url, clock)
    client = redis.Redis.from_url(redis_url)
    burst = [f"burst-{i}" for i in range(600)]
    for value in burst:
        stores.revocations.add(entry(clock, "jti", value, ttl=30))
    clock.advance(31 + SWEEP_GRACE)
    later = JTI_SHARDS // SWEEP_EACH_ADD
    for i in range(later):
        stores.revocations.add(entry(clock, "jti", f"later-{i}", ttl=600))
    pipe = client.pipeline(transaction=False)
    for value in burst:
        bucket, field = place_of(value)
        pipe.hexists(bucket, field)
    assert sum(pipe.execute()) == 0  # every burst entry swept, whichever bucket it was in
    assert client.xlen("{ts}:rev:jlog") == later  # the burst trimmed off the stream's head
    assert sum(client.hlen(k) for k in client.scan_iter("{ts}:rev:j:*", count=1000)) == later
    client.close()
