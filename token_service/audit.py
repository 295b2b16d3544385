"""The audit trail: one structured record per lifecycle event (who, from where, what, on what, outcome).

Records never hold a secret: targets are ids (key ids, revocation ids, kids, jtis), never key text or
tokens. The default sink writes one JSON line per event to the ``token_service.audit`` logger.
``AuditTrail`` stamps records with the injected clock; the service and the auth adapters (for keys
they see exposed or used for the first time) write through the same trail. ``StoredAuditSink`` (the
service's default) also appends each record to the audit store, chained by hash (audit_chain.py), so that
``GET /v1/admin/audit`` and ``token-service audit verify`` can read it back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from token_service.audit_chain import AuditEvent
from token_service.clock import Clock
from token_service.logs import RECORD
from token_service.stores.base import AuditStore, RateLimitStore, StoreUnavailable

__all__ = ["SYSTEM", "SYSTEM_ACTOR", "Actor", "AuditEvent", "AuditRecorder", "AuditSink", "AuditTrail", "LogAuditSink",
           "StoredAuditSink"]

SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: a key id (``bootstrap`` for the bootstrap key), a CLI user, or ``system``."""

    id: str
    address: str | None = None


SYSTEM_ACTOR = Actor(SYSTEM)


class AuditSink(Protocol):
    """Where audit records go."""

    def record(self, event: AuditEvent) -> None:
        """Keep ``event``; must not raise for a well-formed event."""


def _line(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


class LogAuditSink:
    """Audit records as JSON lines on the ``token_service.audit`` logger."""

    def __init__(self) -> None:
        self._log = logging.getLogger("token_service.audit")

    def record(self, event: AuditEvent) -> None:
        """See AuditSink.record."""
        data = asdict(event)
        self._log.info("%s", _line(data), extra={RECORD: data})


REFUSED = "auth.refused"


class StoredAuditSink:
    """Each record appended to the audit store (chained) and written as a JSON line on ``token_service.audit``,
    the line with the record's ``id``, ``seq``, ``prev`` and ``hash``: shipped off-host, the lines are the
    copy a rewritten chain is compared with.

    Failure policy: the append comes after the action it records has succeeded; when the store cannot be
    reached then, the action stands (it is not undone) and the record is not lost silently: its line is
    written at ERROR with ``"stored": false``. Such a record is not in the chain (the chain stays whole; it
    lacks that record) and not in ``GET /v1/admin/audit``: search the logs for ``"stored":false``.

    ``auth.refused`` records (which anyone can cause) are stored at most ``refusals_per_minute`` a minute across
    the instances (counted in ``refusals``, the shared rate-limit store); the others are logged only, at INFO,
    with ``"stored": false``."""

    def __init__(self, store: AuditStore, refusals: RateLimitStore | None = None, refusals_per_minute: int = 10) -> None:
        self._store = store
        self._refusals = refusals
        self._refusals_per_minute = refusals_per_minute
        self._log = logging.getLogger("token_service.audit")

    def _over_budget(self, event: AuditEvent) -> bool:
        """True for an ``auth.refused`` beyond the stored budget (shared by every instance): anyone can cause
        those, and the store is capped by count, so a flood of them must not push the admin records out."""
        if event.action != REFUSED or self._refusals is None:
            return False
        if self._refusals_per_minute <= 0:
            return True
        allowed, _ = self._refusals.hit("audit:auth.refused", 60, self._refusals_per_minute)
        return not allowed

    def record(self, event: AuditEvent) -> None:
        """See AuditSink.record: never raises for a store failure."""
        try:
            if self._over_budget(event):
                data = {**asdict(event), "stored": False, "error": "over the stored budget of auth.refused records"}
                self._log.info("%s", _line(data), extra={RECORD: data})
                return
            stored = self._store.append(event)
        except StoreUnavailable as exc:
            data = {**asdict(event), "stored": False, "error": str(exc)}
            self._log.error("%s", _line(data), extra={RECORD: data})
            return
        data = {**asdict(event), "id": stored.id, "seq": stored.seq, "prev": stored.prev, "hash": stored.hash}
        self._log.info("%s", _line(data), extra={RECORD: data})


class AuditRecorder(Protocol):
    """Writes one audit record: what the service and the auth adapters call (``AuditTrail.record``)."""

    def __call__(self, action: str, target: str | None, actor: Actor = SYSTEM_ACTOR, outcome: str = "ok") -> None:
        """Record ``action`` on ``target`` by ``actor`` (``target`` is an id, never a secret)."""


class AuditTrail:
    """Audit records stamped with the injected clock, handed to a sink."""

    def __init__(self, sink: AuditSink, clock: Clock):
        self.sink = sink
        self._clock = clock

    def record(self, action: str, target: str | None, actor: Actor = SYSTEM_ACTOR, outcome: str = "ok") -> None:
        """See AuditRecorder."""
        self.sink.record(AuditEvent(at=int(self._clock()), actor=actor.id, address=actor.address, action=action,
                                    target=target, outcome=outcome))
