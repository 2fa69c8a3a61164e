"""Shared helpers of the benchmarks: percentiles, CPU pinning, the closing JSON line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100.0 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pin(pid: int, cpu: int) -> bool:
    """Pin *pid* (0 = this process) to one CPU when the machine has two or more."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return False
    if len(available) < 2:
        return False
    os.sched_setaffinity(pid, {available[cpu % len(available)]})
    return True


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's figures as one JSON object on the last line of stdout."""
    sys.stdout.flush()
    sys.stdout.write(msgspec.json.encode(figures).decode() + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A progress line for humans (stderr, so stdout's last line stays the figures)."""
    print(text, file=sys.stderr, flush=True)
