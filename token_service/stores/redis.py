"""Redis stores: shared by every instance. One connection pool per process, connect and socket
timeouts from the settings, every driver error raised as StoreUnavailable.

All keys carry the hash tag ``{ts}`` so that the Lua scripts (atomic multi-key updates) also run on
Redis Cluster. Layout (``P`` = ``{ts}``):
- ``P:rev:rec:<id>``  JSON of a revocation, expiring when it may be forgotten (kid: never)
- ``P:rev:on:<type>:<value>``  the marker the check reads: ``"<revoked_at> <id>"`` of the newest entry
- ``P:rev:ids:<type>:<value>``  ids of the entries for that target (to recompute a marker on lift)
- ``P:rev:idx`` / ``P:rev:exp``  sorted sets by sequence number / by expiry (listing, pruning)
- channel ``P:rev:events``: ``_ADD`` and ``_LIFT`` publish the marker key they wrote, inside the script,
  so local verifiers (``token_service.verifier.RedisRevocations``) drop their cached copy. Explicit
  PUBLISH rather than keyspace notifications: those are off by default (``notify-keyspace-events ""``),
  often not configurable on managed Redis, and would fire for every key, not only markers.
- ``P:rev:lifted`` / ``P:rev:lifted:exp``  lifted entries (the feed's tombstones) by sequence number / by
  the time they can be forgotten
- ``P:key:rec:<id>``  hash of an API key record; ``P:key:idx`` sorted set by sequence number;
  ``P:key:origin:<origin>`` sorted set of the public keys listing that origin, by expiry (+inf: none)
- ``P:replay:<fingerprint>``  a signed request's signature seen, expiring after the signature window
- ``P:rate:<window>:<window number>:<name>``  a rate-limit counter, expiring after its window
- ``P:ring``  hash kid -> JSON of a managed signing key (times, private key sealed under the KEK);
  ``P:lock:<name>`` short locks (one instance stages a scheduled rotation)
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from token_service.apikeys import ApiKey
from token_service.clock import Clock
from token_service.revocation import Marker, Revocation, Target
from token_service.ring import KeyTimes
from token_service.stores.base import (
    ApiKeyStore,
    RateLimitStore,
    ReplayCache,
    RevocationStore,
    SigningKeyStore,
    StoredSigningKey,
    StoreUnavailable,
)
from token_service.stores.cursor import decode_cursor, encode_cursor
from token_service.stores.durability import persistence_warnings, shortfall_seen, unconfirmed

T = TypeVar("T")
P = "{ts}"
log = logging.getLogger("token_service.stores")

_ADD = """
local now = tonumber(ARGV[4])
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 200)
for _, old in ipairs(stale) do
  redis.call('ZREM', KEYS[2], old)
  redis.call('ZREM', KEYS[3], old)
end
local seq = redis.call('INCR', KEYS[6])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('ZADD', KEYS[2], seq, ARGV[1])
local revoked_at = tonumber(ARGV[3])
local before = {redis.call('PTTL', KEYS[4]), redis.call('PTTL', KEYS[5])}
local current = redis.call('GET', KEYS[4])
local keep = false
if current then
  local at = tonumber(string.match(current, '^(%d+) '))
  if at and at > revoked_at then keep = true end
end
if not keep then redis.call('SET', KEYS[4], ARGV[3] .. ' ' .. ARGV[1], 'KEEPTTL') end
redis.call('SADD', KEYS[5], ARGV[1])
for i, k in ipairs({KEYS[4], KEYS[5]}) do
  if ttl <= 0 then
    redis.call('PERSIST', k)
  elseif before[i] == -2 or (before[i] >= 0 and before[i] < ttl) then
    redis.call('PEXPIRE', k, ttl)
  end
end
redis.call('PUBLISH', '{ts}:rev:events', KEYS[4])
return seq
"""

_LIFT = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
local best_at, best_id, longest, forever = -1, nil, 0, false
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local rec = redis.call('GET', ARGV[2] .. id)
  if rec then
    local entry = cjson.decode(rec)
    if entry.revoked_at > best_at then best_at, best_id = entry.revoked_at, id end
    local left = redis.call('PTTL', ARGV[2] .. id)
    if left == -1 then forever = true elseif left > longest then longest = left end
  else
    redis.call('SREM', KEYS[5], id)
  end
end
if best_id then
  redis.call('SET', KEYS[4], string.format('%d', best_at) .. ' ' .. best_id)
  for _, k in ipairs({KEYS[4], KEYS[5]}) do
    if forever then redis.call('PERSIST', k) else redis.call('PEXPIRE', k, math.max(longest, 1)) end
  end
else
  redis.call('DEL', KEYS[4], KEYS[5])
end
redis.call('PUBLISH', '{ts}:rev:events', KEYS[4])
-- the feed: a tombstone, kept while a token the entry covered could still be valid
local now = tonumber(ARGV[4])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now)) do
  redis.call('ZREM', KEYS[7], old)
  redis.call('ZREM', KEYS[8], old)
end
local seq = redis.call('INCR', KEYS[6])
redis.call('ZADD', KEYS[7], seq, ARGV[3])
redis.call('ZADD', KEYS[8], ARGV[5], ARGV[3])
return 1
"""

_CHANGES = """
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local made = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], seq)
local records = {}
for i, id in ipairs(made) do records[i] = redis.call('GET', ARGV[2] .. id) or '' end
local lifted = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], seq)
return {seq, records, lifted}
"""

_KEY_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
return seq
"""

_KEY_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""

_KEY_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local first = redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
return 1 + first
"""

_KEY_SET_EXPIRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'rotated_to', ARGV[3]) end
local at = tonumber(ARGV[1])
local current = redis.call('HGET', KEYS[1], 'expires_at')
if current and current ~= 'null' and tonumber(current) < at then return 1 end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[1])
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[2]) end
return 1
"""

_RATE_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""


def _guard(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return call(*args, **kwargs)
    except (RedisError, RedisClusterException) as exc:  # cluster errors are not RedisErrors
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc


class DurableWrites:
    """Runs the writes that must not be lost: revocations made and lifted, API keys revoked or given an earlier
    expiry, signing keys added or revoked. With ``replicas`` > 0 each write is followed by ``WAIT replicas
    timeout_ms`` in one pipeline, so on the connection that made the write (WAIT counts the replicas that
    acknowledged that connection's writes); a shortfall is reported to ``durability.unconfirmed`` after the
    write is in force. ``client``'s socket timeout must exceed the WAIT's (stores_from_url adds it)."""

    def __init__(self, client: Any, replicas: int = 0, timeout_ms: int = 500):
        self.client: Any = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    def __call__(self, write: Callable[[Any], T]) -> T:
        """``write(client_or_pipeline)``'s result; StoreUnavailable when Redis fails."""
        if not self.replicas or shortfall_seen():
            return _guard(write, self.client)
        pipe = self.client.pipeline(transaction=False)
        write(pipe)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        result, acknowledged = _guard(pipe.execute)
        if int(acknowledged) < self.replicas:
            message = f"{int(acknowledged)} of {self.replicas} Redis replicas acknowledged a write within {self.timeout_ms} ms"
            log.warning("%s: in force on the primary, not confirmed on the replicas", message)
            unconfirmed(message)
        return result  # type: ignore[no-any-return]


def _ids_after(client: Any, index: str, after: int, count: int) -> list[tuple[str, int]]:
    """Up to ``count`` (id, sequence number) pairs of ``index`` after sequence number ``after``."""
    rows = _guard(client.zrangebyscore, index, f"({after}", "+inf", start=0, num=count, withscores=True)
    return [(rid.decode() if isinstance(rid, bytes) else str(rid), int(score)) for rid, score in rows]


def _marker_key(target: Target) -> str:
    return f"{P}:rev:on:{target[0]}:{target[1]}"


def _revocation_json(entry: Revocation) -> str:
    return json.dumps(entry.to_dict(), separators=(",", ":"))


def _revocation_from(raw: bytes | str) -> Revocation:
    data = json.loads(raw)
    return Revocation(
        id=data["id"], type=data["type"], value=data["value"], reason=data["reason"],
        revoked_at=int(data["revoked_at"]), expires_at=None if data["expires_at"] is None else int(data["expires_at"]),
    )


class RedisRevocationStore:
    """RevocationStore on Redis; see the module docstring for the layout."""

    def __init__(self, client: Any, clock: Clock, durable: DurableWrites | None = None):
        self._r: Any = client
        self._clock = clock
        self._durable = durable or DurableWrites(client)
        self._add = client.register_script(_ADD)
        self._lift = client.register_script(_LIFT)
        self._changes = client.register_script(_CHANGES)

    def add(self, entry: Revocation) -> None:
        """See RevocationStore.add."""
        target: Target = (entry.type, entry.value)
        now = self._clock()
        ttl_ms = 0 if entry.expires_at is None else max(1, int((entry.expires_at - now) * 1000))
        keys = [f"{P}:rev:rec:{entry.id}", f"{P}:rev:idx", f"{P}:rev:exp", _marker_key(target),
                f"{P}:rev:ids:{entry.type}:{entry.value}", f"{P}:rev:seq"]
        args = [entry.id, _revocation_json(entry), entry.revoked_at, int(now), ttl_ms, entry.expires_at or 0]
        self._durable(lambda c: self._add(keys=keys, args=args, client=c))

    def lift(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.lift."""
        entry = self.get(revocation_id)
        if entry is None:
            return None
        keys = [f"{P}:rev:rec:{entry.id}", f"{P}:rev:idx", f"{P}:rev:exp", _marker_key((entry.type, entry.value)),
                f"{P}:rev:ids:{entry.type}:{entry.value}", f"{P}:rev:seq", f"{P}:rev:lifted", f"{P}:rev:lifted:exp"]
        forget_at = "+inf" if entry.expires_at is None else entry.expires_at
        args = [entry.id, f"{P}:rev:rec:", _revocation_json(entry), int(self._clock()), forget_at]
        lifted = self._durable(lambda c: self._lift(keys=keys, args=args, client=c))
        return entry if lifted else None

    def changes(self, after: int | None) -> tuple[list[tuple[Revocation, bool]], int]:
        """See RevocationStore.changes: one script, so the sequence number and the items agree."""
        keys = [f"{P}:rev:idx", f"{P}:rev:lifted", f"{P}:rev:seq"]
        seq, records, lifted = _guard(self._changes, keys=keys, args=[after or 0, f"{P}:rev:rec:"])
        items = [(e, False) for e in (_revocation_from(r) for r in records if r) if self._live(e)]
        if after is not None:
            items += [(e, True) for e in (_revocation_from(r) for r in lifted) if self._live(e)]
        return items, int(seq)

    def _live(self, entry: Revocation) -> bool:
        # Redis expires records on its own clock; the injected clock decides too, as in the memory store.
        return entry.expires_at is None or entry.expires_at > self._clock()

    def get(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.get."""
        raw = _guard(self._r.get, f"{P}:rev:rec:{revocation_id}")
        entry = None if raw is None else _revocation_from(raw)
        return entry if entry is not None and self._live(entry) else None

    def page(self, cursor: str | None, limit: int) -> tuple[list[Revocation], str | None]:
        """See RevocationStore.page."""
        after = decode_cursor(cursor)
        items: list[Revocation] = []
        scanned = after
        while True:
            rows = _ids_after(self._r, f"{P}:rev:idx", scanned, limit + 1)
            if not rows:
                return items, None
            records = _guard(self._r.mget, [f"{P}:rev:rec:{rid}" for rid, _ in rows])
            gone = []
            for (rid, seq), raw in zip(rows, records, strict=True):
                entry = None if raw is None else _revocation_from(raw)
                if entry is None or not self._live(entry):  # expired since it was indexed: forget it lazily
                    gone.append(rid)
                elif len(items) == limit:
                    return items, encode_cursor(scanned)
                else:
                    items.append(entry)
                scanned = seq
            if gone:
                _guard(self._r.zrem, f"{P}:rev:idx", *gone)

    def lookup(self, targets: Sequence[Target]) -> list[Marker | None]:
        """See RevocationStore.lookup: one MGET."""
        raw = _guard(self._r.mget, [_marker_key(t) for t in targets])
        result: list[Marker | None] = []
        for value in raw:
            if value is None:
                result.append(None)
            else:
                at, rid = value.decode().split(" ", 1)
                result.append(Marker(revocation_id=rid, revoked_at=int(at)))
        return result


_LIST_FIELDS = ("personas", "scopes", "origins", "permissions")


class RedisApiKeyStore:
    """ApiKeyStore on Redis hashes."""

    def __init__(self, client: Any, durable: DurableWrites | None = None):
        self._r: Any = client
        self._durable = durable or DurableWrites(client)
        self._create = client.register_script(_KEY_CREATE)
        self._revoke = client.register_script(_KEY_REVOKE)
        self._touch = client.register_script(_KEY_TOUCH)
        self._set_expiry = client.register_script(_KEY_SET_EXPIRY)

    def create(self, key: ApiKey) -> None:
        """See ApiKeyStore.create."""
        fields: dict[str, str] = {
            "id": key.id, "type": key.type, "name": json.dumps(key.name), "created_at": str(key.created_at),
            "expires_at": json.dumps(key.expires_at), "digest": key.digest.hex(),
            "rotated_from": json.dumps(key.rotated_from),
        }
        if key.sealed is not None:
            fields["sealed"] = key.sealed.hex()
        for name in _LIST_FIELDS:
            fields[name] = json.dumps(list(getattr(key, name)))
        flat = [part for pair in fields.items() for part in pair]
        origin_keys = [f"{P}:key:origin:{origin}" for origin in key.origins] if key.type == "public" else []
        expiry = "+inf" if key.expires_at is None else str(key.expires_at)
        created = _guard(
            self._create, keys=[f"{P}:key:rec:{key.id}", f"{P}:key:idx", f"{P}:key:seq", *origin_keys], args=[key.id, expiry, *flat]
        )
        if not created:
            raise ValueError("duplicate key id")

    @staticmethod
    def _from_hash(data: dict[bytes, bytes]) -> ApiKey:
        text = {k.decode(): v.decode() for k, v in data.items()}
        return ApiKey(
            id=text["id"], type=text["type"],  # type: ignore[arg-type]
            name=json.loads(text["name"]),
            personas=tuple(json.loads(text["personas"])), scopes=tuple(json.loads(text["scopes"])),
            origins=tuple(json.loads(text["origins"])), permissions=tuple(json.loads(text["permissions"])),
            created_at=int(text["created_at"]), expires_at=json.loads(text["expires_at"]),
            digest=bytes.fromhex(text["digest"]),
            revoked_at=int(text["revoked_at"]) if "revoked_at" in text else None,
            last_used_at=int(text["last_used_at"]) if "last_used_at" in text else None,
            rotated_from=json.loads(text.get("rotated_from", "null")),
            rotated_to=text.get("rotated_to"),
            sealed=bytes.fromhex(text["sealed"]) if "sealed" in text else None,
        )

    def get(self, key_id: str) -> ApiKey | None:
        """See ApiKeyStore.get: one HGETALL."""
        data = _guard(self._r.hgetall, f"{P}:key:rec:{key_id}")
        return self._from_hash(data) if data else None

    def page(self, cursor: str | None, limit: int) -> tuple[list[ApiKey], str | None]:
        """See ApiKeyStore.page."""
        after = decode_cursor(cursor)
        rows = _ids_after(self._r, f"{P}:key:idx", after, limit + 1)
        pipe = self._r.pipeline(transaction=False)
        for rid, _ in rows[:limit]:
            pipe.hgetall(f"{P}:key:rec:{rid}")
        records: list[dict[bytes, bytes]] = _guard(pipe.execute) if rows else []
        items = [self._from_hash(data) for data in records if data]
        next_cursor = encode_cursor(rows[limit - 1][1]) if len(rows) > limit else None
        return items, next_cursor

    def revoke(self, key_id: str, at: int) -> ApiKey | None:
        """See ApiKeyStore.revoke."""
        if not self._durable(lambda c: self._revoke(keys=[f"{P}:key:rec:{key_id}"], args=[at], client=c)):
            return None
        key = self.get(key_id)
        if key is not None and key.type == "public":
            pipe = self._r.pipeline(transaction=False)
            for origin in key.origins:
                pipe.zrem(f"{P}:key:origin:{origin}", key.id)
            _guard(pipe.execute)
        return key

    def touch(self, key_id: str, at: int) -> bool:
        """See ApiKeyStore.touch: HSET answers 1 when it created the field, i.e. on the first use."""
        return bool(_guard(self._touch, keys=[f"{P}:key:rec:{key_id}"], args=[at]) == 2)

    def set_expiry(self, key_id: str, expires_at: int, successor: str | None = None) -> ApiKey | None:
        """See ApiKeyStore.set_expiry: one script moves the record's expiry and the scores of its origins.

        ``ZADD XX`` only rescores: a revoked key's origins, already removed, are not brought back."""
        key = self.get(key_id)
        if key is None:
            return None
        origin_keys = [f"{P}:key:origin:{origin}" for origin in key.origins] if key.type == "public" else []
        args = [expires_at, key_id, successor or ""]
        if not self._durable(lambda c: self._set_expiry(keys=[f"{P}:key:rec:{key_id}", *origin_keys], args=args, client=c)):
            return None
        return self.get(key_id)

    def origin_known(self, origin: str, now: float) -> bool:
        """See ApiKeyStore.origin_known."""
        return bool(_guard(self._r.zcount, f"{P}:key:origin:{origin}", f"({now}", "+inf"))


class RedisReplayCache:
    """ReplayCache on Redis: one ``SET NX EX`` per signature."""

    def __init__(self, client: Any):
        self._r: Any = client

    def first_use(self, fingerprint: str, ttl: int) -> bool:
        """See ReplayCache.first_use."""
        return bool(_guard(self._r.set, f"{P}:replay:{fingerprint}", b"1", nx=True, ex=max(1, ttl)))


_RING_UPDATE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return nil end
local entry = cjson.decode(raw)
if ARGV[2] ~= '' then entry.activates_at = tonumber(ARGV[2]) end
if ARGV[3] ~= '' and (entry.revoked_at == nil or entry.revoked_at == cjson.null) then entry.revoked_at = tonumber(ARGV[3]) end
local encoded = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return encoded
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _signing_key_json(key: StoredSigningKey) -> str:
    t = key.times
    return json.dumps({"kid": t.kid, "alg": t.alg, "created_at": t.created_at, "activates_at": t.activates_at,
                       "revoked_at": t.revoked_at, "sealed": key.sealed_private.hex()}, separators=(",", ":"))


def _signing_key_from(raw: bytes | str) -> StoredSigningKey:
    data = json.loads(raw)
    revoked = data.get("revoked_at")
    times = KeyTimes(kid=data["kid"], alg=data["alg"], created_at=int(data["created_at"]), activates_at=int(data["activates_at"]),
                     revoked_at=None if revoked is None else int(revoked))
    return StoredSigningKey(times=times, sealed_private=bytes.fromhex(data["sealed"]))


class RedisSigningKeyStore:
    """SigningKeyStore on one Redis hash (kid -> JSON with the sealed private key)."""

    def __init__(self, client: Any, durable: DurableWrites | None = None):
        self._r: Any = client
        self._durable = durable or DurableWrites(client)
        self._update = client.register_script(_RING_UPDATE)
        self._release = client.register_script(_RELEASE)
        self._tokens: dict[str, bytes] = {}  # the lock tokens this process holds

    def all(self) -> list[StoredSigningKey]:
        """See SigningKeyStore.all."""
        return [_signing_key_from(raw) for raw in _guard(self._r.hvals, f"{P}:ring")]

    def add(self, key: StoredSigningKey) -> None:
        """See SigningKeyStore.add."""
        if not self._durable(lambda c: c.hsetnx(f"{P}:ring", key.times.kid, _signing_key_json(key))):
            raise ValueError("duplicate kid")

    def update(self, kid: str, activates_at: int | None = None, revoked_at: int | None = None) -> StoredSigningKey | None:
        """See SigningKeyStore.update."""
        args = [kid, "" if activates_at is None else activates_at, "" if revoked_at is None else revoked_at]
        raw = self._durable(lambda c: self._update(keys=[f"{P}:ring"], args=args, client=c))
        return None if raw is None else _signing_key_from(raw)

    def acquire(self, name: str, ttl: int) -> bool:
        """See SigningKeyStore.acquire: SET NX with a token of this holder's, so that only it releases."""
        token = secrets.token_bytes(16)
        if _guard(self._r.set, f"{P}:lock:{name}", token, nx=True, ex=max(1, ttl)):
            self._tokens[name] = token
            return True
        return False

    def release(self, name: str) -> None:
        """See SigningKeyStore.release."""
        token = self._tokens.pop(name, None)
        if token is not None:
            _guard(self._release, keys=[f"{P}:lock:{name}"], args=[token])


class RedisRateLimitStore:
    """RateLimitStore on Redis: one INCR (and PEXPIRE on the first hit) per request, in one script.

    Windows are numbered on the injected clock (as the memory store), so every instance counts in the
    same window and tests drive time; Redis forgets a counter once its window is over."""

    def __init__(self, client: Any, clock: Clock):
        self._clock = clock
        self._hit = client.register_script(_RATE_HIT)

    def hit(self, name: str, window: int, limit: int) -> tuple[bool, int]:
        """See RateLimitStore.hit."""
        now = self._clock()
        number = int(now // window)
        left = (number + 1) * window - now
        count = _guard(self._hit, keys=[f"{P}:rate:{window}:{number}:{name}"], args=[int(left * 1000) + 1000])
        return int(count) <= limit, max(1, math.ceil(left))


class RedisStores:
    """The shared stores of a deployment, on one Redis client (one pool per process)."""

    shared = True

    def __init__(self, client: Any, clock: Clock, durable: DurableWrites | None = None):
        self.client: Any = client
        self.durable = durable or DurableWrites(client)
        self.revocations: RevocationStore = RedisRevocationStore(client, clock, self.durable)
        self.api_keys: ApiKeyStore = RedisApiKeyStore(client, self.durable)
        self.replays: ReplayCache = RedisReplayCache(client)
        self.rate_limits: RateLimitStore = RedisRateLimitStore(client, clock)
        self.signing_keys: SigningKeyStore = RedisSigningKeyStore(client, self.durable)

    def ping(self) -> None:
        """See Stores.ping."""
        _guard(self.client.ping)

    def close(self) -> None:
        """Release the connection pool(s)."""
        self.client.close()
        if self.durable.client is not self.client:
            self.durable.client.close()

    def persistence_warnings(self) -> list[str]:
        """What in this Redis's persistence and eviction settings may lose acknowledged revocations (see
        durability.persistence_warnings); StoreUnavailable when it cannot be asked. On a cluster, the node
        holding the ``{ts}`` slot (every key of the service) is asked."""
        node_of = getattr(self.client, "get_node_from_key", None)
        client = self.client if node_of is None else self.client.get_redis_connection(node_of(P))
        persistence = _guard(client.info, "persistence")
        memory = _guard(client.info, "memory")
        config: dict[str, str] = {}
        try:
            for name in ("save", "appendfsync"):
                for key, value in _guard(client.config_get, name).items():
                    text = value.decode() if isinstance(value, bytes) else str(value)
                    config[key.decode() if isinstance(key, bytes) else str(key)] = text
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, ResponseError):  # refused (managed Redis, ACL): unknown; else: down
                raise
            return persistence_warnings(persistence, memory, None)
        return persistence_warnings(persistence, memory, config)


def client_from_url(url: str, connect_timeout: float, socket_timeout: float, max_connections: int) -> Any:
    """A redis-py client for a ``redis://``, ``rediss://``, ``unix://``, ``sentinel://`` or ``cluster://`` URL."""
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "max_connections": max_connections,
        "health_check_interval": 30,
        # No retries inside a call: a call costs at most the two timeouts (docs/design.md, "Failure policy"),
        # and on Sentinel a retry would reconnect to the dead primary instead of asking the sentinels again.
        "retry": Retry(NoBackoff(), 0),
    }
    scheme, _, rest = url.partition("://")
    if scheme in ("sentinel", "redis+sentinel"):
        # sentinel://host:port[,host:port...]/service-name[/db]
        hosts_part, _, path = rest.partition("/")
        service, _, db = path.partition("/")
        hosts = []
        for host in hosts_part.split(","):
            name, _, port = host.rpartition(":")
            hosts.append((name or host, int(port or 26379)))
        options.pop("max_connections")
        sentinel_options = {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout}
        sentinel = redis.sentinel.Sentinel(hosts, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service or "mymaster", db=int(db or 0))  # type: ignore[no-untyped-call]
    if scheme in ("cluster", "redis+cluster"):
        options.pop("health_check_interval")
        options.pop("retry")  # the cluster client's retries follow MOVED and failovers between nodes
        try:
            return redis.cluster.RedisCluster.from_url("redis://" + rest, **options)
        except (RedisError, RedisClusterException) as exc:  # the cluster client reads the slot map at construction
            raise StoreUnavailable(f"redis cluster: {type(exc).__name__}") from exc
    return redis.Redis.from_url(url, **options)
