"""Replay one ticket's scans from every node through ``sync.rules.step``.

Each node decided alone, from what it knew. Put together, the admissions it accepted
are replayed in ``scanned_at`` order (then ``logged_at``, ``scan_id`` and gate, so the
order is total and every replay gives the same answer):

- a refused scan changed nothing at its node and is skipped;
- an accepted scan the replay accepts too is an entry (or an exit);
- an accepted scan the replay refuses is a conflict: the ticket's rule was broken across
  nodes (e.g. a single-entry ticket admitted at two gates while they were cut off). The
  replay reason says which rule, and the state stays as it was.

Only the mode rules and pass limits are replayed: validity (cancelled, unpaid, date,
zone, window) was the deciding node's to judge at that moment. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sync.rules import EMPTY_STATE, Limits, Reason, ScanState, resolve_direction, step
from sync.wire import ScanItem


@dataclass(frozen=True, slots=True)
class Conflict:
    """An admission a node accepted that the replay refuses, and why."""

    scan: ScanItem
    reason: Reason


@dataclass(frozen=True, slots=True)
class Reconciled:
    entries: list[ScanItem]
    """Accepted scans the replay accepts too (entries and exits), in replay order."""
    conflicts: list[Conflict]
    state: ScanState
    replayed: dict[str, Reason] = field(default_factory=dict)
    """The replay's reason for every accepted scan, by ``scan_id``."""

    @property
    def entry_count(self) -> int:
        return sum(1 for scan in self.entries if scan.reason == Reason.OK)


def replay_order(scan: ScanItem) -> tuple[float, float, str, str]:
    return (scan.scanned_at, scan.logged_at, scan.scan_id, scan.gate)


def reconcile(
    scans: Iterable[ScanItem],
    dates: Mapping[int, tuple[int, int]],
    limits: Limits,
) -> Reconciled:
    """Replay *scans* of one ticket; *dates* maps a date id to its (event, day)."""
    state = EMPTY_STATE
    entries: list[ScanItem] = []
    conflicts: list[Conflict] = []
    replayed: dict[str, Reason] = {}
    for scan in sorted(scans, key=replay_order):
        if scan.result != "accepted":
            continue
        event, day = dates.get(scan.date, (0, 0))
        direction = resolve_direction(state, scan.mode, scan.direction, scan.date)
        reason, _direction, new_state = step(
            state, scan.mode, direction, scan.date, event, day, limits, scan.scanned_at
        )
        replayed[scan.scan_id] = reason
        if reason in (Reason.OK, Reason.EXIT_OK):
            state = new_state
            entries.append(scan)
        else:
            conflicts.append(Conflict(scan, reason))
    return Reconciled(entries, conflicts, state, replayed)
