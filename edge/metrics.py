"""Counters of the scan path and their Prometheus text rendering (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sync.rules import ADMITTING, Reason


@dataclass(slots=True)
class Counters:
    scans: int = 0
    accepted: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    quick_cancels: int = 0
    signature_checks: int = 0

    def count(self, reason: Reason) -> None:
        self.scans += 1
        if reason in ADMITTING:
            self.accepted += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class RateMeter:
    """Scans per second over the last few whole seconds."""

    WINDOW_S: Final = 10

    def __init__(self) -> None:
        self._buckets = [0] * self.WINDOW_S
        self._second = 0

    def tick(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._advance(second)
        self._buckets[second % self.WINDOW_S] += 1

    def _advance(self, second: int) -> None:
        gap = min(second - self._second, self.WINDOW_S)
        for i in range(1, gap + 1):
            self._buckets[(self._second + i) % self.WINDOW_S] = 0
        self._second = second

    def rate(self, now: float) -> float:
        """Average over the last whole seconds (the current one is still counting)."""
        second = int(now)
        if second != self._second:
            self._advance(second)
        full = sum(self._buckets) - self._buckets[second % self.WINDOW_S]
        return full / (self.WINDOW_S - 1)


def counter(name: str, help_text: str, value: float | int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]


def gauge(name: str, help_text: str, value: float | int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]


def histogram(
    name: str, help_text: str, bounds: Sequence[float], counts: Sequence[int], total: float
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        label = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{le="{label}"}} {running}')
    lines += [f"{name}_sum {total:.6f}", f"{name}_count {running}"]
    return lines


def scans_by_reason(counters: Counters) -> list[str]:
    lines = [
        "# HELP edge_scans_total Scans decided, by reason.",
        "# TYPE edge_scans_total counter",
    ]
    for reason in Reason:
        result = "accepted" if reason in ADMITTING else "rejected"
        value = counters.by_reason.get(reason, 0)
        lines.append(f'edge_scans_total{{result="{result}",reason="{reason}"}} {value}')
    return lines
