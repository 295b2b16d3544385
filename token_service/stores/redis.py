"""Redis stores: shared by every instance. One connection pool per process, connect and socket
timeouts from the settings, every driver error raised as StoreUnavailable.

All keys carry the hash tag ``{ts}`` so that the Lua scripts (atomic multi-key updates) also run on
Redis Cluster. Layout (``P`` = ``{ts}``):
- ``P:rev:seq``  the revocations' sequence number (INCR; entries made and lifted), never expiring
- jti entries (the bulk: every logout makes one), packed, about 130 bytes each (docs/performance.md):
  - ``P:rev:j:<shard>``  ``JTI_SHARDS`` (16,384) hash buckets: field = 16-byte digest of the jti, value =
    ``"<revoked_at> <life> <seq> <id16>"`` (``token_service.jti_buckets`` has the details: the shard, the
    id carrying it, several entries of one jti). What the check reads (HGET). Each add sweeps the expired
    fields of its bucket and moves the bucket's TTL to its latest expiry: a bucket shrinks with traffic
    and vanishes one horizon after its last add.
  - ``P:rev:jlog``  a stream, one entry per jti entry in sequence order, id ``<seq>-<revoked_at>``, fields
    ``v`` (the jti), ``r`` (the reason: ``""`` none, ``"1"`` the holder's logout, else ``"="`` + text),
    ``d`` (life), ``i`` (id16 as a signed 64-bit decimal): the listing and the feed. Each add trims the
    expired entries at its head (XTRIM MINID) and pushes the stream's TTL to its latest expiry; a lift
    XDELs the entry.
- the other types (sub, personaId, client_id, kid: few entries), and jti entries whose id does not carry
  their bucket (written before this layout, see below):
  - ``P:rev:rec:<id>``  JSON of a revocation, expiring when it may be forgotten (kid: never)
  - ``P:rev:on:<type>:<value>``  the marker the check reads: ``"<revoked_at> <id>"`` of the newest entry
  - ``P:rev:ids:<type>:<value>``  ids of the entries for that target (to recompute a marker on lift)
  - ``P:rev:idx`` / ``P:rev:exp``  sorted sets by sequence number / by expiry (listing, pruning)
- Upgrade: jti entries written by a version before the buckets (``P:rev:rec``/``P:rev:on:jti:...``) stay
  where they are and keep being honoured: ``lookup`` reads ``P:rev:on:jti:<jti>`` along with the bucket
  (one MGET key more, in the same script), and get, lift, listing and the feed read both layouts. Nothing
  is migrated; the old keys expire on their own within one horizon.
- channel ``P:rev:events``: ``_ADD`` and ``_LIFT`` publish the marker key they wrote, ``_ADD_JTI`` and
  ``_LIFT_JTI`` ``P:rev:j:<shard>:<hex digest>`` (``jti_buckets.event_key``, not a key), inside the
  script, so local verifiers (``token_service.verifier.RedisRevocations``) drop their cached copy.
  Explicit PUBLISH rather than keyspace notifications: those are off by default
  (``notify-keyspace-events ""``), often not configurable on managed Redis, and would fire for every key.
- ``P:rev:lifted`` / ``P:rev:lifted:exp``  lifted entries (the feed's tombstones) by sequence number / by
  the time they can be forgotten
- ``P:key:rec:<id>``  hash of an API key record; ``P:key:idx`` sorted set by sequence number;
  ``P:key:origin:<origin>`` sorted set of the public keys listing that origin, by expiry (+inf: none)
- ``P:replay:<fingerprint>``  a signed request's signature seen, expiring after the signature window
- ``P:rate:<window>:<window number>:<name>``  a rate-limit counter, expiring after its window
- ``P:ring``  hash kid -> JSON of a managed signing key (times, private key sealed under the KEK);
  ``P:lock:<name>`` short locks (one instance stages a scheduled rotation)
- ``P:audit``  the audit log, a stream; ``P:audit:head`` / ``P:audit:anchor`` its chain's ends (RedisAuditStore)
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from token_service.apikeys import ApiKey
from token_service.audit_chain import GENESIS, AuditEvent, AuditRecord, Break, Link, canonical, chained, record_from
from token_service.clock import Clock
from token_service.jti_buckets import (
    BUCKET_PREFIX,
    JTI_SHARDS,
    LOOKUP,
    SWEEP_EACH_ADD,
    SWEEP_GRACE,
    bucket_of_id,
    event_key,
    marker_in,
    place_of,
)
from token_service.revocation import Marker, Revocation, Target, jti_digest
from token_service.ring import KeyTimes
from token_service.stores.base import (
    AUDIT_MAX_RECORDS,
    AUDIT_RETENTION,
    ApiKeyStore,
    AuditStore,
    RateLimitStore,
    ReplayCache,
    RevocationStore,
    SigningKeyStore,
    StoredSigningKey,
    StoreUnavailable,
)
from token_service.stores.cursor import decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor
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

# Both lift scripts end with the feed's tombstone: the lifted entry's JSON in ``lifted`` by sequence number and in
# ``lifted_exp`` by when it can be forgotten (kept while a token the entry covered could still be valid).
_TOMBSTONE = """
local function tombstone(lifted, lifted_exp, seq_key, now, record, forget_at)
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', lifted_exp, '-inf', now)) do
    redis.call('ZREM', lifted, old)
    redis.call('ZREM', lifted_exp, old)
  end
  local seq = redis.call('INCR', seq_key)
  redis.call('ZADD', lifted, seq, record)
  redis.call('ZADD', lifted_exp, forget_at, record)
end
"""

_LIFT = _TOMBSTONE + """
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
tombstone(KEYS[7], KEYS[8], KEYS[6], tonumber(ARGV[4]), ARGV[3], ARGV[5])
return 1
"""

_CHANGES = """
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local made = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], seq, 'WITHSCORES')
local records = {}
for i = 1, #made, 2 do
  records[#records + 1] = redis.call('GET', ARGV[2] .. made[i]) or ''
  records[#records + 1] = made[i + 1]
end
local jtis = redis.call('XRANGE', KEYS[4], ARGV[3], '+')
local lifted = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], seq)
return {seq, records, lifted, jtis}
"""

# jti entries (see jti_buckets): KEYS bucket, stream, seq, then the buckets swept round-robin; ARGV field,
# revoked_at, life, id16, now (the sweep's), ttl_ms, jti, reason code, id16 as a signed decimal, event key
_ADD_JTI = """
local now = tonumber(ARGV[5])
local function live(part)
  local at, life = string.match(part, '^(%d+) (%d+) ')
  return at ~= nil and tonumber(at) + tonumber(life) > now
end
-- sweep the expired entries of this bucket and of the round-robin ones (KEYS[4..])
local function sweep(bucket)
  local all = redis.call('HGETALL', bucket)
  for n = 1, #all, 2 do
    local kept, dropped = {}, false
    for part in string.gmatch(all[n + 1], '[^;]+') do
      if live(part) then kept[#kept + 1] = part else dropped = true end
    end
    if dropped then
      if #kept == 0 then redis.call('HDEL', bucket, all[n]) else redis.call('HSET', bucket, all[n], table.concat(kept, ';')) end
    end
  end
end
sweep(KEYS[1])
for k = 4, #KEYS do sweep(KEYS[k]) end
-- trim the expired entries at the stream's head (ids <seq>-<revoked_at>, field 'd' the life), up to 256 an add
local minid, done = nil, false
for _, count in ipairs({4, 28, 224}) do  -- a short first read: the head is usually live
  local head = redis.call('XRANGE', KEYS[2], minid or '-', '+', 'COUNT', count)
  for _, item in ipairs(head) do
    local s, at = string.match(item[1], '^(%d+)%-(%d+)$')
    local fields, life = item[2], nil
    for f = 1, #fields, 2 do if fields[f] == 'd' then life = tonumber(fields[f + 1]) end end
    if life ~= nil and tonumber(at) + life > now then minid, done = item[1], true break end
    minid = s .. '-' .. string.format('%d', tonumber(at) + 1)
  end
  if done or #head < count then break end
end
if minid then redis.call('XTRIM', KEYS[2], 'MINID', minid) end
local seq = redis.call('INCR', KEYS[3])
local text = string.format('%d', seq)
redis.call('XADD', KEYS[2], text .. '-' .. ARGV[2], 'v', ARGV[7], 'r', ARGV[8], 'd', ARGV[3], 'i', ARGV[9])
local part = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. text .. ' ' .. ARGV[4]
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then part = part .. ';' .. current end
redis.call('HSET', KEYS[1], ARGV[1], part)
local ttl = tonumber(ARGV[6])
for _, k in ipairs({KEYS[1], KEYS[2]}) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
redis.call('PUBLISH', '{ts}:rev:events', ARGV[10])
return seq
"""

# KEYS bucket, stream, seq, lifted, lifted:exp; ARGV field, id16, stream id, now, tombstone JSON, forget at, event key
_LIFT_JTI = _TOMBSTONE + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local kept, found = {}, false
for part in string.gmatch(current, '[^;]+') do
  if not found and string.sub(part, -17) == ' ' .. ARGV[2] then found = true else kept[#kept + 1] = part end
end
if not found then return 0 end
if #kept == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], table.concat(kept, ';')) end
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('PUBLISH', '{ts}:rev:events', ARGV[7])
tombstone(KEYS[4], KEYS[5], KEYS[3], tonumber(ARGV[4]), ARGV[5], ARGV[6])
return 1
"""

# An entry by id: KEYS record (the general layout), bucket, stream; ARGV id16, the field's first two bytes.
# Answers {1, record JSON}, {2, field, entry, stream fields} or {0}.
_FIND = """
local rec = redis.call('GET', KEYS[1])
if rec then return {1, rec} end
local all = redis.call('HGETALL', KEYS[2])
local suffix = ' ' .. ARGV[1]
for n = 1, #all, 2 do
  if string.sub(all[n], 1, 2) == ARGV[2] then
    for part in string.gmatch(all[n + 1], '[^;]+') do
      if string.sub(part, -17) == suffix then
        local at, _, seq = string.match(part, '^(%d+) (%d+) (%d+) ')
        local found = redis.call('XRANGE', KEYS[3], seq .. '-' .. at, seq .. '-' .. at)
        if #found == 0 then return {0} end
        return {2, all[n], part, found[1][2]}
      end
    end
  end
end
return {0}
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


CallObserver = Callable[[Callable[..., Any], float, bool], None]
_observer: list[CallObserver] = []
"""At most one: told of every guarded Redis call (the call, seconds it took, whether it failed); see observe_calls."""


def observe_calls(observer: CallObserver | None) -> None:
    """Report every Redis call made through ``_guard`` to ``observer`` (the metrics), or to nobody (None)."""
    _observer[:] = [observer] if observer is not None else []


def _guard(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if not _observer:
        try:
            return call(*args, **kwargs)
        except (RedisError, RedisClusterException) as exc:  # cluster errors are not RedisErrors
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
    started, failed = time.perf_counter(), True
    try:
        result = call(*args, **kwargs)
        failed = False
        return result
    except (RedisError, RedisClusterException) as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
    finally:
        _observer[0](call, time.perf_counter() - started, failed)


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


_HOLDER_REASON = "revoked by its holder"  # every logout's reason (service.revoke_own): one byte in the stream
_JTI_STREAM = f"{P}:rev:jlog"
_ID_BITS = 1 << 64


def _reason_code(reason: str | None) -> str:
    return "" if reason is None else "1" if reason == _HOLDER_REASON else "=" + reason


def _reason_of(code: str) -> str | None:
    return None if code == "" else _HOLDER_REASON if code == "1" else code[1:]


def _signed_id(id16: str) -> str:
    """The 16 hex digits as a signed 64-bit decimal: Redis keeps it in 8 bytes instead of 16."""
    value = int(id16, 16)
    return str(value - _ID_BITS if value >= _ID_BITS >> 1 else value)


def _bucketed(entry: Revocation) -> tuple[str, bytes] | None:
    """The bucket and field of a jti entry that goes to the buckets; None for one that goes to the general layout
    (another type, no expiry, or an id that does not carry its bucket: made elsewhere than new_revocation_id)."""
    if entry.type != "jti" or entry.expires_at is None or not 0 <= entry.revoked_at <= entry.expires_at:
        return None
    bucket, digest = place_of(entry.value)
    named = bucket_of_id(entry.id)
    return (bucket, digest) if named is not None and named[1] == digest[:2] else None


def _jti_from(stream_id: bytes | str, fields: Sequence[bytes | str]) -> tuple[int, Revocation]:
    """(sequence number, entry) of a ``P:rev:jlog`` stream entry."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    seq, at = text.split("-")
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in zip(fields[::2], fields[1::2], strict=True)}
    value = data["v"]
    id16 = (int(data["i"]) % _ID_BITS).to_bytes(8, "big").hex()
    revoked_at = int(at)
    return int(seq), Revocation(id=f"rev_{id16}{jti_digest(value)[:2].hex()}", type="jti", value=value,
                                reason=_reason_of(data["r"]), revoked_at=revoked_at, expires_at=revoked_at + int(data["d"]))


def _stream_rows(rows: Any) -> list[tuple[int, Revocation]]:
    """XRANGE's answer (redis-py: (id, {field: value}) pairs, or the raw nested lists from a script) as entries."""
    out = []
    for stream_id, fields in rows:
        flat = [part for pair in fields.items() for part in pair] if isinstance(fields, dict) else fields
        out.append(_jti_from(stream_id, flat))
    return out


class RedisRevocationStore:
    """RevocationStore on Redis; see the module docstring for the layout."""

    def __init__(self, client: Any, clock: Clock, durable: DurableWrites | None = None):
        self._r: Any = client
        self._clock = clock
        self._durable = durable or DurableWrites(client)
        self._add = client.register_script(_ADD)
        self._add_jti = client.register_script(_ADD_JTI)
        self._next_sweep = secrets.randbelow(JTI_SHARDS)  # this process's round-robin place (instances spread out)
        self._lift = client.register_script(_LIFT)
        self._lift_jti = client.register_script(_LIFT_JTI)
        self._find = client.register_script(_FIND)
        self._lookup = client.register_script(LOOKUP)
        self._changes = client.register_script(_CHANGES)

    def add(self, entry: Revocation) -> None:
        """See RevocationStore.add: one script (no read first: the benchmark queues adds on a pipeline)."""
        now = self._clock()
        ttl_ms = 0 if entry.expires_at is None else max(1, int((entry.expires_at - now) * 1000))
        place = _bucketed(entry)
        if place is not None:
            assert entry.expires_at is not None
            bucket, digest = place
            id16 = entry.id[4:20]
            # and SWEEP_EACH_ADD more buckets, round-robin: expired entries of buckets no add reaches go too
            start, self._next_sweep = self._next_sweep, (self._next_sweep + SWEEP_EACH_ADD) % JTI_SHARDS
            swept = [f"{BUCKET_PREFIX}{(start + i) % JTI_SHARDS}" for i in range(SWEEP_EACH_ADD)]
            jkeys = [bucket, _JTI_STREAM, f"{P}:rev:seq", *(b for b in swept if b != bucket)]
            # ARGV[5], the sweep's "now": SWEEP_GRACE behind this instance's clock (a clock ahead sweeps nothing live)
            jargs = [digest, entry.revoked_at, entry.expires_at - entry.revoked_at, id16, int(now) - SWEEP_GRACE, ttl_ms, entry.value,
                     _reason_code(entry.reason), _signed_id(id16), event_key(bucket, digest)]
            self._durable(lambda c: self._add_jti(keys=jkeys, args=jargs, client=c))
            return
        target: Target = (entry.type, entry.value)
        keys = [f"{P}:rev:rec:{entry.id}", f"{P}:rev:idx", f"{P}:rev:exp", _marker_key(target),
                f"{P}:rev:ids:{entry.type}:{entry.value}", f"{P}:rev:seq"]
        args = [entry.id, _revocation_json(entry), entry.revoked_at, int(now), ttl_ms, entry.expires_at or 0]
        self._durable(lambda c: self._add(keys=keys, args=args, client=c))

    def _found(self, revocation_id: str) -> tuple[Revocation, list[Any] | None] | None:
        """The entry with this id in force, and for a bucketed one [bucket, field, stream id]; one round trip."""
        named = bucket_of_id(revocation_id)
        found: tuple[Revocation, list[Any] | None] | None
        if named is None:
            raw = _guard(self._r.get, f"{P}:rev:rec:{revocation_id}")
            found = None if raw is None else (_revocation_from(raw), None)
        else:
            keys = [f"{P}:rev:rec:{revocation_id}", named[0], _JTI_STREAM]
            answer = _guard(self._find, keys=keys, args=[revocation_id[4:20], named[1]])
            if int(answer[0]) == 1:
                found = (_revocation_from(answer[1]), None)
            elif int(answer[0]) == 2:
                part = answer[2].decode().split(" ")
                seq, entry = _jti_from(f"{part[2]}-{part[0]}", answer[3])
                found = (entry, [named[0], answer[1], f"{seq}-{entry.revoked_at}"])
            else:
                found = None
        if found is None or not self._live(found[0]):
            return None
        return found

    def lift(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.lift."""
        found = self._found(revocation_id)
        if found is None:
            return None
        entry, place = found
        forget_at = "+inf" if entry.expires_at is None else entry.expires_at
        lifted_keys = [f"{P}:rev:seq", f"{P}:rev:lifted", f"{P}:rev:lifted:exp"]
        if place is not None:
            bucket, field, stream_id = place
            keys = [bucket, _JTI_STREAM, *lifted_keys]
            args = [field, entry.id[4:20], stream_id, int(self._clock()), _revocation_json(entry), forget_at,
                    event_key(bucket, field)]
            lifted = self._durable(lambda c: self._lift_jti(keys=keys, args=args, client=c))
            return entry if lifted else None
        keys = [f"{P}:rev:rec:{entry.id}", f"{P}:rev:idx", f"{P}:rev:exp", _marker_key((entry.type, entry.value)),
                f"{P}:rev:ids:{entry.type}:{entry.value}", *lifted_keys]
        args = [entry.id, f"{P}:rev:rec:", _revocation_json(entry), int(self._clock()), forget_at]
        lifted = self._durable(lambda c: self._lift(keys=keys, args=args, client=c))
        return entry if lifted else None

    def changes(self, after: int | None) -> tuple[list[tuple[Revocation, bool]], int]:
        """See RevocationStore.changes: one script, so the sequence number and the items agree; entries of both
        layouts in sequence order."""
        keys = [f"{P}:rev:idx", f"{P}:rev:lifted", f"{P}:rev:seq", _JTI_STREAM]
        since = after or 0
        seq, records, lifted, jtis = _guard(self._changes, keys=keys, args=[since, f"{P}:rev:rec:", f"{since + 1}-0"])
        made = [(int(score), _revocation_from(raw)) for raw, score in zip(records[::2], records[1::2], strict=True) if raw]
        made += _stream_rows(jtis)
        made.sort(key=lambda pair: pair[0])
        items = [(e, False) for _, e in made if self._live(e)]
        if after is not None:
            items += [(e, True) for e in (_revocation_from(r) for r in lifted) if self._live(e)]
        return items, int(seq)

    def _live(self, entry: Revocation) -> bool:
        # Redis expires records on its own clock; the injected clock decides too, as in the memory store.
        return entry.expires_at is None or entry.expires_at > self._clock()

    def get(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.get."""
        found = self._found(revocation_id)
        return None if found is None else found[0]

    def page(self, cursor: str | None, limit: int) -> tuple[list[Revocation], str | None]:
        """See RevocationStore.page: the general index and the jti stream merged by sequence number."""
        after = decode_cursor(cursor)
        items: list[Revocation] = []
        scanned = after
        while True:
            pipe = self._r.pipeline(transaction=False)
            pipe.zrangebyscore(f"{P}:rev:idx", f"({scanned}", "+inf", start=0, num=limit + 1, withscores=True)
            pipe.xrange(_JTI_STREAM, min=f"{scanned + 1}-0", max="+", count=limit + 1)
            ranked, streamed = _guard(pipe.execute)
            indexed = [(rid.decode() if isinstance(rid, bytes) else str(rid), int(score)) for rid, score in ranked]
            records = _guard(self._r.mget, [f"{P}:rev:rec:{rid}" for rid, _ in indexed]) if indexed else []
            rows: list[tuple[int, str, Revocation | None]] = [
                (seq, rid, None if raw is None else _revocation_from(raw)) for (rid, seq), raw in zip(indexed, records, strict=True)]
            rows += [(seq, "", e) for seq, e in _stream_rows(streamed)]
            rows.sort(key=lambda row: row[0])
            rows = rows[:limit + 1]  # the first limit + 1 of either source are the first limit + 1 of both
            if not rows:
                return items, None
            gone = []
            for seq, rid, entry in rows:
                if entry is None or not self._live(entry):  # expired since it was indexed: forget it lazily
                    if rid:
                        gone.append(rid)
                elif len(items) == limit:
                    return items, encode_cursor(scanned)
                else:
                    items.append(entry)
                scanned = seq
            if gone:
                _guard(self._r.zrem, f"{P}:rev:idx", *gone)

    def lookup(self, targets: Sequence[Target]) -> list[Marker | None]:
        """See RevocationStore.lookup: one MGET, or with jti targets one script (MGET + HGET of their buckets;
        the MGET still reads a jti's marker key of the general layout: entries written before the buckets)."""
        markers = [_marker_key(t) for t in targets]
        places = [(i, place_of(value)) for i, (kind, value) in enumerate(targets) if kind == "jti"]
        if not places:
            return [_marker_of(value) for value in _guard(self._r.mget, markers)]
        keys = markers + [bucket for _, (bucket, _) in places]
        raw = _guard(self._lookup, keys=keys, args=[len(markers), *[digest for _, (_, digest) in places]])
        result = [_marker_of(value) for value in raw[:len(markers)]]
        now = self._clock()
        for (i, (_, digest)), value in zip(places, raw[len(markers):], strict=True):
            found = marker_in(value, digest, now)
            current = result[i]
            if found is not None and (current is None or found.revoked_at > current.revoked_at):
                result[i] = found
        return result


def _marker_of(value: bytes | None) -> Marker | None:
    if value is None:
        return None
    at, rid = value.decode().split(" ", 1)
    return Marker(revocation_id=rid, revoked_at=int(at))


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


# The audit log (RedisAuditStore): stream ``P:audit`` (fields ``r``: the record's canonical body, ``h``: its
# hash), ``P:audit:head`` and ``P:audit:anchor`` (``"<seq> <hash> <id>"`` of the newest and of the last
# trimmed record). Stream ids are ``<ms>-<n>`` on the injected clock (never going back), so that ``since``
# and the retention cutoff are ranges of ids.
_AUDIT_APPEND = """
local head = redis.call('GET', KEYS[2]) or ''
if head ~= ARGV[1] then return {0, head} end
-- the id: this millisecond, or (a clock behind the newest record's) the newest's millisecond and next number;
-- made here rather than with XADD's '<ms>-*', which needs Redis 7
local ms, n = tonumber(ARGV[5]), 0
if head ~= '' then
  local last_ms, last_n = string.match(head, ' (%d+)%-(%d+)$')
  if last_ms and tonumber(last_ms) >= ms then ms, n = tonumber(last_ms), tonumber(last_n) + 1 end
end
local id = redis.call('XADD', KEYS[1], string.format('%d-%d', ms, n), 'r', ARGV[2], 'h', ARGV[3])
redis.call('SET', KEYS[2], ARGV[4] .. ' ' .. ARGV[3] .. ' ' .. id)
local function key(rid)
  local a, b = string.match(rid, '^(%d+)%-(%d+)$')
  return tonumber(a), tonumber(b)
end
-- trimming: through the newest record older than the cutoff, or through the oldest beyond the maximum count
local through = nil
local old = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[6] .. '-0', '-', 'COUNT', 1)
if #old > 0 then through = old[1] end
local excess = math.min(redis.call('XLEN', KEYS[1]) - tonumber(ARGV[7]), 10000)
if excess > 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  local candidate = first[#first]
  if through == nil then
    through = candidate
  else
    local cm, cn = key(candidate[1])
    local tm, tn = key(through[1])
    if cm > tm or (cm == tm and cn > tn) then through = candidate end
  end
end
if through then
  local body, hash = '', ''
  for i = 1, #through[2], 2 do
    if through[2][i] == 'r' then body = through[2][i + 1] elseif through[2][i] == 'h' then hash = through[2][i + 1] end
  end
  local ok, decoded = pcall(cjson.decode, body)
  local seq = '?'
  if ok and type(decoded) == 'table' and type(decoded.seq) == 'number' then seq = string.format('%d', decoded.seq) end
  redis.call('SET', KEYS[3], seq .. ' ' .. hash .. ' ' .. through[1])
  local after = redis.call('XRANGE', KEYS[1], '(' .. through[1], '+', 'COUNT', 1)
  redis.call('XTRIM', KEYS[1], 'MINID', after[1][1])
end
return {1, id}
"""

_AUDIT_CHAIN = """
return {redis.call('GET', KEYS[3]) or '', redis.call('GET', KEYS[2]) or '',
        redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])}
"""

AUDIT_APPEND_ATTEMPTS = 50
"""Appends retried after another instance moved the head first, before giving up (StoreUnavailable)."""
AUDIT_SCAN = 1000
"""Records a filtered page reads at most before it answers (fewer items and a cursor to go on)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _link_or_break(raw: bytes | str, what: str) -> Link | Break | None:
    text = _text(raw)
    if not text:
        return None
    try:
        return Link.parse(text)
    except ValueError:
        return Break(None, "unreadable", f"the chain's {what} cannot be read")


def _audit_record(rid: str, fields: dict[str, str]) -> AuditRecord | Break:
    try:
        return record_from(rid, fields["r"], fields["h"])
    except (KeyError, ValueError, TypeError):
        return Break(rid, "unreadable", f"record {rid} cannot be read")


class RedisAuditStore:
    """AuditStore on a Redis stream, trimmed by the append script (MINID) to the retention period and the
    maximum count; see the comment above ``_AUDIT_APPEND`` for the layout.

    The hash (SHA-256) is computed here, the link checked there: the script appends only when the head is the
    one the record was chained to (compare-and-set), else answers the current head and the append is chained
    again. So two instances never fork the chain, and one round trip suffices while this process wrote the last
    record."""

    def __init__(self, client: Any, clock: Clock, retention: int = AUDIT_RETENTION, max_records: int = AUDIT_MAX_RECORDS):
        self._r: Any = client
        self._clock = clock
        self._retention_ms = retention * 1000
        self._max = max_records
        self._append = client.register_script(_AUDIT_APPEND)
        self._chain = client.register_script(_AUDIT_CHAIN)
        self._keys = [f"{P}:audit", f"{P}:audit:head", f"{P}:audit:anchor"]
        self._head = ""  # the head as this process last saw it: the first guess of the next append

    def append(self, event: AuditEvent) -> AuditRecord:
        """See AuditStore.append."""
        expected = self._head
        for _ in range(AUDIT_APPEND_ATTEMPTS):
            try:
                head = Link.parse(expected) if expected else None
            except ValueError:
                raise StoreUnavailable("audit: the chain's head cannot be read") from None
            record = chained(event, head.seq + 1 if head else 1, head.hash if head else GENESIS)
            now_ms = int(self._clock() * 1000)
            args = [expected, canonical(record.body()), record.hash, record.seq, now_ms, now_ms - self._retention_ms, self._max]
            done, value = _guard(self._append, keys=self._keys, args=args)
            if int(done):
                rid = _text(value)
                self._head = f"{record.seq} {record.hash} {rid}"
                return replace(record, id=rid)
            expected = _text(value)
        raise StoreUnavailable("audit: the chain's head kept moving (too many concurrent appends)")

    def page(self, since: int | None, action: str | None, cursor: str | None, limit: int) -> tuple[list[AuditRecord], str | None]:
        """See AuditStore.page."""
        after = decode_id_cursor(cursor)
        start = f"({after}" if after is not None else (f"{since * 1000}-0" if since is not None else "-")
        items: list[AuditRecord] = []
        scanned = 0
        last: str | None = None
        while True:
            rows = _guard(self._r.xrange, f"{P}:audit", start, "+", count=limit + 1 if action is None else 200)
            if not rows:
                return items, None
            for raw_id, raw_fields in rows:
                rid = _text(raw_id)
                record = _audit_record(rid, {_text(k): _text(v) for k, v in raw_fields.items()})
                if isinstance(record, AuditRecord) and record.matches(since, action):
                    if len(items) == limit:
                        return items, encode_id_cursor(items[-1].id)
                    items.append(record)
                last, scanned = rid, scanned + 1
                if scanned >= AUDIT_SCAN and len(items) < limit:
                    return items, encode_id_cursor(last)
            start = f"({last}"

    def chain(self, after: str | None, count: int) -> tuple[Link | None, Link | None, list[AuditRecord | Break]]:
        """See AuditStore.chain: one script, so the ends and the records agree."""
        anchor_raw, head_raw, rows = _guard(self._chain, keys=self._keys, args=["-" if after is None else f"({after}", count])
        records: list[AuditRecord | Break] = []
        ends: list[Link | None] = []
        for raw, what in ((anchor_raw, "trimming anchor"), (head_raw, "head")):
            link = _link_or_break(raw, what)
            if isinstance(link, Break):
                records.append(link)
                link = None
            ends.append(link)
        for raw_id, flat in rows:
            fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
            records.append(_audit_record(_text(raw_id), fields))
        return ends[0], ends[1], records


class RedisStores:
    """The shared stores of a deployment, on one Redis client (one pool per process)."""

    shared = True

    def __init__(self, client: Any, clock: Clock, durable: DurableWrites | None = None, audit_retention: int = AUDIT_RETENTION,
                 audit_max_records: int = AUDIT_MAX_RECORDS):
        self.client: Any = client
        self.durable = durable or DurableWrites(client)
        self.revocations: RevocationStore = RedisRevocationStore(client, clock, self.durable)
        self.api_keys: ApiKeyStore = RedisApiKeyStore(client, self.durable)
        self.replays: ReplayCache = RedisReplayCache(client)
        self.rate_limits: RateLimitStore = RedisRateLimitStore(client, clock)
        self.signing_keys: SigningKeyStore = RedisSigningKeyStore(client, self.durable)
        self.audit: AuditStore = RedisAuditStore(client, clock, audit_retention, audit_max_records)

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
