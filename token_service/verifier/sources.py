"""The interface of a revocation source: the markers of a token's targets (see ``revocation.targets_of``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from token_service.revocation import Marker, Target


class RevocationSource(Protocol):
    """Answers, for each target, the strongest revocation in force (or None); raises RevocationUnavailable
    when it cannot answer with a current copy (fail closed)."""

    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        """One marker (or None) per target, in order."""
        ...

    def close(self) -> None:
        """Stop background work and release connections."""
        ...
