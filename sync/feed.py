"""Pure parts of the edge's sync session: retry schedule and link bookkeeping.

No I/O and no clock: ``now`` and the random source are passed in, so the schedule is
tested without sleeping.

Retry policy (both directions): after a transient failure (connection refused or
reset, timeout, 5xx) wait ``Backoff.next_delay`` — full jitter over an exponential
that starts at ``BASE_S`` and is capped at ``CAP_S`` — then try again. The cap is small
on purpose: a node must be back in sync within about two seconds of the core's return.
A permanent refusal (4xx) is not retried as is; the item is logged and passed over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Protocol

BASE_S: Final = 0.05
CAP_S: Final = 1.0
FACTOR: Final = 2.0


class RandomSource(Protocol):
    def random(self) -> float: ...


class Backoff:
    """Capped exponential backoff with full jitter."""

    __slots__ = ("_attempt", "base", "cap")

    def __init__(self, base: float = BASE_S, cap: float = CAP_S) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    def next_delay(self, rng: RandomSource = random) -> float:
        ceiling = min(self.cap, self.base * FACTOR**self._attempt)
        self._attempt += 1
        return rng.random() * ceiling

    def reset(self) -> None:
        self._attempt = 0


@dataclass(slots=True)
class Link:
    """Health of one direction (changes down, scans up), for status and metrics."""

    last_ok_at: float | None = None
    last_error_at: float | None = None
    last_error: str = ""
    failures: int = 0
    """Consecutive failures since the last success."""

    def ok(self, now: float) -> None:
        self.last_ok_at = now
        self.failures = 0

    def failed(self, now: float, error: str) -> None:
        self.last_error_at = now
        self.last_error = error[:200]
        self.failures += 1

    @property
    def connected(self) -> bool:
        return self.last_ok_at is not None and self.failures == 0

    def as_dict(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "last_ok_at": self.last_ok_at,
            "last_error_at": self.last_error_at,
            "last_error": self.last_error,
            "failures": self.failures,
        }
