"""The audit trail: one structured record per lifecycle event (who, from where, what, on what, outcome).

Records never hold a secret: targets are ids (key ids, revocation ids, kids, jtis), never key text or
tokens. The default sink writes one JSON line per event to the ``token_service.audit`` logger.
``AuditTrail`` stamps records with the injected clock; the service and the auth adapters (for keys
they see exposed or used for the first time) write through the same trail.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Protocol

from token_service.clock import Clock

SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: a key id (``bootstrap`` for the bootstrap key), a CLI user, or ``system``."""

    id: str
    address: str | None = None


SYSTEM_ACTOR = Actor(SYSTEM)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record."""

    at: int
    actor: str
    address: str | None
    action: str
    target: str | None
    outcome: str


class AuditSink(Protocol):
    """Where audit records go."""

    def record(self, event: AuditEvent) -> None:
        """Keep ``event``; must not raise for a well-formed event."""


class LogAuditSink:
    """Audit records as JSON lines on the ``token_service.audit`` logger."""

    def __init__(self) -> None:
        self._log = logging.getLogger("token_service.audit")

    def record(self, event: AuditEvent) -> None:
        """See AuditSink.record."""
        self._log.info("%s", json.dumps(asdict(event), separators=(",", ":"), sort_keys=True))


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
