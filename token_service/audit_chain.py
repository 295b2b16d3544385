"""The audit log's hash chain: each stored record carries the hash of the one before it (``prev``) and its
own ``hash``, SHA-256 over a canonical encoding (sorted-key compact JSON, ASCII) of its fields and ``prev``.

What this detects (docs/operations/audit.md): a record changed, removed or inserted anywhere in the
retained log, and the newest records removed (the store keeps the head, the newest record's sequence number
and hash, apart from the stream), by anyone who cannot also rewrite every record after the change and
the head. Someone with full write access to the store can rebuild the chain from the change on: compare
with the copies of the records shipped off-host (the ``token_service.audit`` log lines carry the same
``seq`` and ``hash``). Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

GENESIS = "0" * 64
"""The ``prev`` of the first record ever written."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record as the service writes it (who, from where, what, on what, outcome)."""

    at: int
    actor: str
    address: str | None
    action: str
    target: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class Link:
    """A point of the chain: a record's sequence number, hash and id (the head, or the trimming anchor)."""

    seq: int
    hash: str
    id: str

    def text(self) -> str:
        """``"<seq> <hash> <id>"``, as the stores keep it."""
        return f"{self.seq} {self.hash} {self.id}"

    @classmethod
    def parse(cls, text: str) -> Link:
        """The link of ``text`` (``"<seq> <hash> <id>"``); ValueError when it is not one."""
        seq, digest, rid = text.split(" ")
        return cls(int(seq), digest, rid)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit record: the event's fields, its place in the chain, and its store id."""

    id: str
    seq: int
    at: int
    actor: str
    address: str | None
    action: str
    target: str | None
    outcome: str
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The hashed fields (everything but ``id`` and ``hash``)."""
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "address": self.address, "action": self.action,
                "target": self.target, "outcome": self.outcome, "prev": self.prev}

    def item(self) -> dict[str, Any]:
        """The API's shape (``GET /v1/admin/audit``): id, at, actor, address, action, target, outcome."""
        return {"id": self.id, "at": self.at, "actor": self.actor, "address": self.address, "action": self.action,
                "target": self.target, "outcome": self.outcome}

    def matches(self, since: int | None, action: str | None) -> bool:
        """True when the record is at or after ``since`` and is exactly ``action`` (None: no condition)."""
        return (since is None or self.at >= since) and (action is None or self.action == action)

    def expected_hash(self) -> str:
        """The hash this record's fields give (equal to ``hash`` unless it was changed)."""
        return digest(canonical(self.body()))


def canonical(body: dict[str, Any]) -> str:
    """The canonical encoding that is hashed: sorted keys, no white space, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(text: str) -> str:
    """SHA-256 of ``text`` as 64 hex digits."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def chained(event: AuditEvent, seq: int, prev: str, rid: str = "") -> AuditRecord:
    """``event`` as record ``seq`` linked after ``prev``, its hash computed (``rid`` is not hashed: the store
    assigns it once the record is in place)."""
    body = {"seq": seq, "at": event.at, "actor": event.actor, "address": event.address, "action": event.action,
            "target": event.target, "outcome": event.outcome, "prev": prev}
    return AuditRecord(id=rid, seq=seq, at=event.at, actor=event.actor, address=event.address, action=event.action,
                       target=event.target, outcome=event.outcome, prev=prev, hash=digest(canonical(body)))


def record_from(rid: str, text: str, stored_hash: str) -> AuditRecord:
    """The record stored as ``text`` (its canonical body) and ``stored_hash``; ValueError when ``text`` is not one."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a record")
    return AuditRecord(
        id=rid, seq=int(data["seq"]), at=int(data["at"]), actor=str(data["actor"]), address=data.get("address"),
        action=str(data["action"]), target=data.get("target"), outcome=str(data["outcome"]), prev=str(data["prev"]),
        hash=stored_hash,
    )


Problem = Literal["hash mismatch", "prev mismatch", "missing", "unreadable"]


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link: the record where the chain stops holding (None: past the newest), and why."""

    record_id: str | None
    problem: Problem
    detail: str


@dataclass(frozen=True, slots=True)
class Verification:
    """What a verification found: the records checked, and the first broken link or None."""

    checked: int
    broken: Break | None


def verify(anchor: Link | None, head: Link | None, records: Iterable[AuditRecord | Break]) -> Verification:
    """Check ``records`` (oldest first, up to the head; a Break stands for a record that could not be read)
    against the chain: consecutive sequence numbers from the anchor's (1 when nothing was trimmed), each
    ``prev`` the hash of the record before (the anchor's for the first), each hash recomputed, and the last
    record equal to the head. Returns at the first broken link."""
    expected_seq = anchor.seq + 1 if anchor is not None else 1
    expected_prev = anchor.hash if anchor is not None else GENESIS
    before = anchor.id if anchor is not None else None
    checked = 0
    for record in records:
        if isinstance(record, Break):
            return Verification(checked, record)
        if record.seq != expected_seq:
            if record.seq > expected_seq:
                what = (f"record(s) {expected_seq}..{record.seq - 1} before it are missing"
                        + (f" (the record before it is {before})" if before else " (it should follow the start of the log)"))
            else:
                what = f"its sequence number is {record.seq}, expected {expected_seq} (a record was inserted or renumbered)"
            return Verification(checked, Break(record.id, "missing" if record.seq > expected_seq else "prev mismatch",
                                               f"record {record.id} (seq {record.seq}): {what}"))
        if record.prev != expected_prev:
            if checked == 0:
                after = f"the trimming anchor (record {before}, trimmed)" if anchor is not None else "the start of the log"
            else:
                after = f"record {before}"
            return Verification(checked, Break(record.id, "prev mismatch",
                                               f"record {record.id} (seq {record.seq}): its prev is not the hash of {after} "
                                               "(that record, or this one's prev, was changed)"))
        if record.expected_hash() != record.hash:
            return Verification(checked, Break(record.id, "hash mismatch",
                                               f"record {record.id} (seq {record.seq}): its fields do not hash to its stored hash "
                                               "(the record was changed)"))
        checked += 1
        expected_seq, expected_prev, before = record.seq + 1, record.hash, record.id
    if head is None:
        if checked or anchor is not None:
            return Verification(checked, Break(None, "missing", "the head (the newest record's hash) is missing"))
        return Verification(checked, None)
    if head.seq >= expected_seq:
        return Verification(checked, Break(None, "missing",
                                           f"the newest record(s) {expected_seq}..{head.seq} are missing (the head names {head.id})"))
    if head.seq != expected_seq - 1 or head.hash != expected_prev:
        return Verification(checked, Break(before, "hash mismatch",
                                           f"the newest record {before} does not match the head (seq {head.seq}, id {head.id})"))
    return Verification(checked, None)


ChainReader = Callable[[str | None, int], tuple[Link | None, Link | None, list[AuditRecord | Break]]]
"""``AuditStore.chain``: (anchor, head, up to ``count`` records after an id), read together."""


def _id_key(rid: str) -> tuple[int, int]:
    ms, _, n = rid.partition("-")
    return (int(ms), int(n)) if ms.isdigit() and n.isdigit() else (-1, -1)


def verify_log(read: ChainReader, batch: int = 500) -> Verification:
    """Verify a stored log page by page: the anchor and head of the first read, then every record up to that
    head (records appended while this runs are left for the next verification)."""
    anchor, head, first = read(None, batch)

    def records() -> Iterator[AuditRecord | Break]:
        page = first
        while page:
            for record in page:
                if isinstance(record, AuditRecord) and head is not None and _id_key(record.id) > _id_key(head.id):
                    return
                yield record
            last = page[-1]
            if isinstance(last, Break) or last.id == "":
                return
            _, _, page = read(last.id, batch)

    return verify(anchor, head, records())
