"""The audit store's contract, on the embedded store and a real Redis: order, pages, filters, the hash chain,
trimming to the retention period and the maximum count (with the anchor verification starts from), and
concurrent appends keeping one chain. Then, on Redis only, tampering done with the raw client and what
verification says about it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from token_service.audit_chain import GENESIS, AuditEvent, AuditRecord, Link, canonical, digest, verify_log
from token_service.stores import Stores, stores_from_url
from token_service.stores.memory import MemoryAuditStore
from token_service.stores.redis import _AUDIT_APPEND, RedisAuditStore


def build(backend: str, request: pytest.FixtureRequest, clock: FakeClock, **audit: int) -> Stores:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return stores_from_url(url, clock, **{f"audit_{name}": value for name, value in audit.items()})


@pytest.fixture
def made(request: pytest.FixtureRequest) -> Iterator[list[Stores]]:
    built: list[Stores] = []
    yield built
    for stores in built:
        close = getattr(stores, "close", None)
        if close:
            close()


@pytest.fixture
def stores(backend: str, request: pytest.FixtureRequest, clock: FakeClock, made: list[Stores]) -> Stores:
    made.append(build(backend, request, clock))
    return made[-1]


def event(clock: FakeClock, action: str = "api_key.create", target: str | None = "k1 secret", actor: str = "bootstrap") -> AuditEvent:
    return AuditEvent(at=int(clock()), actor=actor, address="10.0.0.1", action=action, target=target, outcome="ok")


def every(stores: Stores, since: int | None = None, action: str | None = None, limit: int = 100) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    cursor = None
    while True:
        page, cursor = stores.audit.page(since, action, cursor, limit)
        records.extend(page)
        if cursor is None:
            return records


def id_key(rid: str) -> tuple[int, int]:
    ms, n = rid.split("-")
    return int(ms), int(n)


class TestAuditStore:
    def test_append_chains_each_record_to_the_one_before(self, stores: Stores, clock: FakeClock) -> None:
        first = stores.audit.append(event(clock))
        second = stores.audit.append(event(clock, "revocation.create", "r1 sub"))
        clock.advance(2)
        third = stores.audit.append(event(clock, "api_key.revoke", "k1"))
        assert [r.seq for r in (first, second, third)] == [1, 2, 3]
        assert first.prev == GENESIS and second.prev == first.hash and third.prev == second.hash
        for record in (first, second, third):
            assert record.hash == digest(canonical(record.body())) and len(record.hash) == 64
        assert id_key(first.id) < id_key(second.id) < id_key(third.id)  # stream ids, on the injected clock
        assert id_key(first.id)[0] == int(clock() * 1000) - 2000
        assert every(stores) == [first, second, third]
        assert first.item() == {"id": first.id, "at": first.at, "actor": "bootstrap", "address": "10.0.0.1",
                                "action": "api_key.create", "target": "k1 secret", "outcome": "ok"}
        result = verify_log(stores.audit.chain)
        assert (result.checked, result.broken) == (3, None)

    def test_an_empty_log_verifies(self, stores: Stores) -> None:
        assert stores.audit.page(None, None, None, 10) == ([], None)
        result = verify_log(stores.audit.chain)
        assert (result.checked, result.broken) == (0, None)

    def test_pages_oldest_first_with_an_opaque_cursor(self, stores: Stores, clock: FakeClock) -> None:
        made = [stores.audit.append(event(clock, target=f"k{i}")) for i in range(7)]
        pages = []
        cursor = None
        while True:
            items, cursor = stores.audit.page(None, None, cursor, 3)
            pages.append(items)
            if cursor is None:
                break
            assert made[0].id not in cursor  # opaque: not the id itself
        assert [len(p) for p in pages] == [3, 3, 1] and [r for p in pages for r in p] == made

    def test_a_full_last_page_ends_the_listing(self, stores: Stores, clock: FakeClock) -> None:
        made = [stores.audit.append(event(clock)) for _ in range(4)]
        first, cursor = stores.audit.page(None, None, None, 2)
        second, end = stores.audit.page(None, None, cursor, 2)
        assert first + second == made and end is None

    def test_foreign_cursors_are_refused(self, stores: Stores, clock: FakeClock) -> None:
        stores.audit.append(event(clock))
        for bad in ("nope", "czE", "YTEyMw", "a1-1", "YTEyMy0", "YWJjLTE", "=" * 4, "x" * 100):
            with pytest.raises(ValueError):
                stores.audit.page(None, None, bad, 10)

    def test_since_and_action_filter(self, stores: Stores, clock: FakeClock) -> None:
        early = stores.audit.append(event(clock, "api_key.create"))
        clock.advance(100)
        middle = int(clock())
        revoked = stores.audit.append(event(clock, "api_key.revoke"))
        created = stores.audit.append(event(clock, "api_key.create"))
        clock.advance(100)
        late = stores.audit.append(event(clock, "api_key.create_extra"))
        assert every(stores, action="api_key.create") == [early, created]  # exact: not a prefix
        assert every(stores, action="api_key") == []
        assert every(stores, since=middle) == [revoked, created, late]
        assert every(stores, since=middle + 1) == [late]
        assert every(stores, since=middle, action="api_key.create") == [created]
        assert every(stores, since=int(clock()) + 1) == []

    def test_filtered_pages_follow_the_cursor(self, stores: Stores, clock: FakeClock) -> None:
        wanted = []
        for i in range(12):
            record = stores.audit.append(event(clock, "auth.refused" if i % 3 == 0 else "api_key.create"))
            if i % 3 == 0:
                wanted.append(record)
        assert every(stores, action="auth.refused", limit=1) == wanted

    def test_records_older_than_the_retention_are_trimmed_from_an_anchor(self, backend: str, request: pytest.FixtureRequest,
                                                                          clock: FakeClock, made: list[Stores]) -> None:
        made.append(build(backend, request, clock, retention=3600))
        stores = made[-1]
        old = [stores.audit.append(event(clock, target=f"old{i}")) for i in range(3)]
        clock.advance(1800)
        kept = stores.audit.append(event(clock, target="kept"))
        clock.advance(1801)  # the old ones are now older than an hour; "kept" is not
        newest = stores.audit.append(event(clock, target="newest"))
        assert every(stores) == [kept, newest]
        anchor, head, _ = stores.audit.chain(None, 10)
        assert anchor == Link(old[-1].seq, old[-1].hash, old[-1].id)
        assert head == Link(newest.seq, newest.hash, newest.id)
        result = verify_log(stores.audit.chain)
        assert (result.checked, result.broken) == (2, None)
        clock.advance(7200)  # everything is old: the new record alone remains, still chained
        alone = stores.audit.append(event(clock, target="alone"))
        assert every(stores) == [alone] and alone.prev == newest.hash and alone.seq == newest.seq + 1
        assert stores.audit.chain(None, 10)[0] == Link(newest.seq, newest.hash, newest.id)
        assert verify_log(stores.audit.chain).broken is None

    def test_the_oldest_records_beyond_the_maximum_count_are_trimmed(self, backend: str, request: pytest.FixtureRequest,
                                                                    clock: FakeClock, made: list[Stores]) -> None:
        made.append(build(backend, request, clock, max_records=5))
        stores = made[-1]
        records = [stores.audit.append(event(clock, target=f"k{i}")) for i in range(8)]
        assert every(stores) == records[3:]
        assert stores.audit.chain(None, 10)[0] == Link(records[2].seq, records[2].hash, records[2].id)
        result = verify_log(stores.audit.chain, batch=2)
        assert (result.checked, result.broken) == (5, None)

    def test_a_clock_going_back_keeps_the_ids_in_order(self, stores: Stores, clock: FakeClock) -> None:
        first = stores.audit.append(event(clock))
        clock.advance(-5)  # another instance's clock, a little behind
        second = stores.audit.append(event(clock))
        assert id_key(second.id) > id_key(first.id) and every(stores) == [first, second]

    def test_concurrent_appends_from_two_instances_keep_one_chain(self, backend: str, request: pytest.FixtureRequest,
                                                                 clock: FakeClock, made: list[Stores]) -> None:
        if backend == "redis":  # two instances: two clients, two stores, one Redis
            made.extend([build(backend, request, clock), build(backend, request, clock)])
            instances = made[-2:]
        else:  # one process: threads sharing the embedded store
            made.append(build(backend, request, clock))
            instances = [made[-1], made[-1]]
        per_thread = 150
        start = threading.Barrier(4)

        def run(stores: Stores, name: str) -> None:
            start.wait()
            for i in range(per_thread):
                stores.audit.append(event(clock, target=f"{name}-{i}"))

        threads = [threading.Thread(target=run, args=(instances[i % 2], f"t{i}")) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        records = every(instances[0])
        assert [r.seq for r in records] == list(range(1, 4 * per_thread + 1))
        assert all(b.prev == a.hash for a, b in zip(records, records[1:], strict=False))
        assert len({r.target for r in records}) == 4 * per_thread  # none lost, none written twice
        result = verify_log(instances[1].audit.chain, batch=100)
        assert (result.checked, result.broken) == (4 * per_thread, None)


# -- Redis only: tampering with the stored log through the raw client ------------------------------


STREAM = "{ts}:audit"


@pytest.fixture
def redis_stores(redis_url: str, clock: FakeClock, made: list[Stores]) -> Stores:
    made.append(stores_from_url(redis_url, clock))
    return made[-1]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def five(stores: Stores, clock: FakeClock) -> list[AuditRecord]:
    records = []
    for i in range(5):
        records.append(stores.audit.append(event(clock, target=f"k{i}")))
        clock.advance(1)
    return records


def rebuild(raw: redis.Redis, change: dict[str, Any]) -> None:
    """Rewrite the stream with the same ids, the entries in ``change`` (id -> new fields) replaced: what an
    attacker with write access does to edit a record in the middle (XADD appends only at the end)."""
    entries = raw.xrange(STREAM)
    raw.delete(STREAM)
    for rid, fields in entries:
        text = rid.decode()
        raw.xadd(STREAM, change.get(text, fields), id=text)


def test_the_redis_layout(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    assert raw.type(STREAM) == b"stream" and raw.xlen(STREAM) == 5
    assert raw.get("{ts}:audit:head").decode() == Link(records[-1].seq, records[-1].hash, records[-1].id).text()
    assert raw.exists("{ts}:audit:anchor") == 0  # nothing trimmed yet
    assert all(key.startswith(b"{ts}:") for key in raw.keys("*"))


def test_a_deleted_middle_record_is_named(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    raw.xdel(STREAM, records[2].id)
    broken = verify_log(redis_stores.audit.chain).broken
    assert broken is not None and (broken.record_id, broken.problem) == (records[3].id, "missing")
    assert records[1].id in broken.detail and "3..3" in broken.detail


def test_an_edited_field_is_a_hash_mismatch_at_that_record(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    body = {**records[1].body(), "actor": "someone-else"}
    rebuild(raw, {records[1].id: {"r": canonical(body), "h": records[1].hash}})
    assert every(redis_stores)[1].actor == "someone-else"  # the edit is there ...
    broken = verify_log(redis_stores.audit.chain).broken  # ... and verification says where
    assert broken is not None and (broken.record_id, broken.problem) == (records[1].id, "hash mismatch")


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    body = {**records[2].body(), "action": "api_key.first_use"}
    rebuild(raw, {records[2].id: {"r": canonical(body), "h": digest(canonical(body))}})
    broken = verify_log(redis_stores.audit.chain).broken
    assert broken is not None and (broken.record_id, broken.problem) == (records[3].id, "prev mismatch")
    assert records[2].id in broken.detail


def test_deleted_newest_records_are_missing_against_the_head(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    raw.xdel(STREAM, records[3].id, records[4].id)
    broken = verify_log(redis_stores.audit.chain).broken
    assert broken is not None and broken.problem == "missing" and "4..5" in broken.detail


def test_an_unreadable_record_is_named(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    records = five(redis_stores, clock)
    rebuild(raw, {records[0].id: {"r": "not json", "h": records[0].hash}})
    broken = verify_log(redis_stores.audit.chain).broken
    assert broken is not None and (broken.record_id, broken.problem) == (records[0].id, "unreadable")
    assert [r.id for r in every(redis_stores)] == [r.id for r in records[1:]]  # the listing skips it


def test_a_rewritten_chain_verifies_but_no_longer_matches_the_log_lines(redis_stores: Stores, clock: FakeClock,
                                                                        raw: redis.Redis) -> None:
    """What the chain does not protect against: full write access rebuilds it from the edit on. The hashes
    the log lines carried (shipped off-host) are what tells."""
    records = five(redis_stores, clock)
    shipped = [r.hash for r in records]
    prev, change = records[1].hash, {}
    for record in records[2:]:
        body = {**record.body(), "prev": prev, "actor": "forged" if record.seq == 3 else record.actor}
        prev = digest(canonical(body))
        change[record.id] = {"r": canonical(body), "h": prev}
    rebuild(raw, change)
    raw.set("{ts}:audit:head", Link(5, prev, records[-1].id).text())
    assert verify_log(redis_stores.audit.chain).broken is None
    assert [r.hash for r in every(redis_stores)] != shipped


def test_a_corrupted_head_stops_appends_loudly(redis_stores: Stores, clock: FakeClock, raw: redis.Redis) -> None:
    five(redis_stores, clock)
    raw.set("{ts}:audit:head", "garbage")
    fresh = RedisAuditStore(raw, clock)
    from token_service.stores import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        fresh.append(event(clock))
    broken = verify_log(fresh.chain).broken
    assert broken is not None and broken.problem == "unreadable"


def test_appends_from_two_stores_retry_instead_of_forking(redis_url: str, clock: FakeClock, raw: redis.Redis) -> None:
    """Each store guesses the head it last saw; the other store moved it, so the script refuses and the
    append is chained again: counted, so that this test fails if the compare-and-set is not exercised."""
    first, second = RedisAuditStore(redis.Redis.from_url(redis_url), clock), RedisAuditStore(redis.Redis.from_url(redis_url), clock)
    raw.script_load(_AUDIT_APPEND)  # loaded: no NOSCRIPT round trip in the count
    raw.config_resetstat()
    for _ in range(10):
        first.append(event(clock))
        second.append(event(clock))
    calls = int(raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    assert calls == 20 + 19  # every append but the first one found the head moved by the other store once
    result = verify_log(first.chain)
    assert (result.checked, result.broken) == (20, None)


def test_the_embedded_store_is_bounded() -> None:
    store = MemoryAuditStore(FakeClock(), max_records=10**9)
    for _ in range(3):
        store.append(AuditEvent(at=0, actor="a", address=None, action="x.y", target=None, outcome="ok"))
    assert store._max == 100_000  # noqa: SLF001 - the cap whatever the setting
