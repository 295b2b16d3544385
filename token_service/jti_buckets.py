"""How Redis keeps jti revocations, shared by the Redis store (``stores/redis.py``) and the in-process
verifier (``verifier/redis_source.py``). Pure: no I/O.

jti entries are the bulk of the revocations (every logout makes one), so they are packed: the entry for a
jti is a field of one of ``JTI_SHARDS`` hash buckets ``{ts}:rev:j:<shard>``, the field being
``jti_digest(jti)`` (16 bytes) and the shard its first two bytes modulo ``JTI_SHARDS``. The field's value
is ``"<revoked_at> <life> <seq> <id16>"``: ``life`` = expires_at - revoked_at in seconds, ``seq`` the
entry's sequence number (its stream entry, for listing), ``id16`` the 16 random hex digits of its id (the
id is ``rev_`` + id16 + the digest's first two bytes in hex, see ``revocation.new_revocation_id``).
Several entries for the same jti (rare) share the field, ``;``-separated; the newest one in force is the
marker.

With Redis's default ``hash-max-listpack-entries 128`` and ``hash-max-listpack-value 64`` a bucket stays
listpack-encoded (about 60 bytes a field) up to 128 fields, i.e. up to about 2 million jti revocations in
force with 16,384 buckets; beyond that, or for a field holding several entries (over 64 bytes), Redis
converts that bucket to a hashtable: still correct, only less compact (Redis does not convert back until
the bucket expires).
"""

from __future__ import annotations

import re

from token_service.revocation import Marker, jti_digest

JTI_SHARDS = 16384  # at most 65,536: the shard is read back from the two bytes an id carries
BUCKET_PREFIX = "{ts}:rev:j:"
SWEEP_EACH_ADD = 1
"""Buckets each jti add sweeps besides its own, round-robin (a per-process cursor): with adds going on, every bucket
is swept every JTI_SHARDS / SWEEP_EACH_ADD adds (16,384), so expired entries of buckets that no add reaches leave
too, and the store shrinks back after a burst. Each add also trims up to 256 expired entries off the stream's head.
(4 buckets an add made a loaded store's adds 2.6 times slower: a sweep reads every field of a bucket.)"""
SWEEP_GRACE = 60
"""Seconds an expired jti entry is kept before an add sweeps it off its bucket or the stream: the sweep runs on the
adding instance's clock, and an instance whose clock runs ahead (by less than this) must not remove the entries
other instances still enforce. Twice the default TOKEN_SERVICE_CLOCK_SKEW: instances whose clocks differ by more
already disagree on tokens (docs/design.md). Redis's own TTL on the bucket and the stream (its clock) is unaffected."""
_ID = re.compile(r"rev_[0-9a-f]{20}")

# The check with jti targets, in one command (the cluster client refuses a pipeline of MGET and HGET): KEYS
# the marker keys then the jtis' buckets; ARGV the number of marker keys, then the jtis' fields.
LOOKUP = """
local n = tonumber(ARGV[1])
local out = redis.call('MGET', unpack(KEYS, 1, n))
for i = n + 1, #KEYS do out[#out + 1] = redis.call('HGET', KEYS[i], ARGV[i - n + 1]) end
return out
"""


def place_of(jti: str) -> tuple[str, bytes]:
    """The bucket key and the field of a jti's entry."""
    digest = jti_digest(jti)
    return f"{BUCKET_PREFIX}{int.from_bytes(digest[:2], 'big') % JTI_SHARDS}", digest


def bucket_of_id(revocation_id: str) -> tuple[str, bytes] | None:
    """The bucket and the field's first two bytes that the id of a bucketed entry names; None when the id
    cannot be one (ids are checked against the bucket's entries: a random id only names an empty place)."""
    if not _ID.fullmatch(revocation_id):
        return None
    tail = bytes.fromhex(revocation_id[20:])
    return f"{BUCKET_PREFIX}{int.from_bytes(tail, 'big') % JTI_SHARDS}", tail


def event_key(bucket: str, digest: bytes) -> str:
    """What ``_ADD_JTI`` / ``_LIFT_JTI`` publish on ``{ts}:rev:events`` for this entry (not a Redis key)."""
    return f"{bucket}:{digest.hex()}"


def marker_in(raw: bytes | None, digest: bytes, now: float) -> Marker | None:
    """The newest entry in force (``revoked_at + life > now``) of a bucket field's value, or None."""
    if raw is None:
        return None
    best: Marker | None = None
    for part in raw.split(b";"):
        at, life, _, id16 = part.split(b" ")
        revoked_at = int(at)
        if revoked_at + int(life) > now and (best is None or revoked_at > best.revoked_at):
            best = Marker(revocation_id=f"rev_{id16.decode()}{digest[:2].hex()}", revoked_at=revoked_at)
    return best
