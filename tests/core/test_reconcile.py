"""sync.reconcile: pure replay of one ticket's scans from several nodes."""

from __future__ import annotations

from sync.reconcile import reconcile
from sync.rules import NO_LIMITS, Direction, Limits, Mode, Reason
from sync.wire import ScanItem

DATES = {1: (10, 700), 2: (11, 700), 3: (12, 701)}


def scan(sid, at, *, date=1, mode=Mode.SINGLE, direction=Direction.ENTRY, accepted=True):
    reason = Reason.OK if direction == Direction.ENTRY else Reason.EXIT_OK
    return ScanItem(
        scan_id=sid,
        ticket=5,
        result="accepted" if accepted else "rejected",
        reason=reason if accepted else Reason.ALREADY_USED,
        direction=direction,
        gate="g",
        mode=mode,
        date=date,
        scanned_at=at,
        logged_at=at,
    )


def test_single_entry_admitted_at_two_nodes_is_a_conflict():
    out = reconcile([scan("b", 20.0), scan("a", 10.0)], DATES, NO_LIMITS)
    assert [s.scan_id for s in out.entries] == ["a"]
    assert [(c.scan.scan_id, c.reason) for c in out.conflicts] == [("b", Reason.ALREADY_USED)]
    assert out.entry_count == 1


def test_rejected_scans_are_skipped():
    out = reconcile([scan("a", 1.0), scan("b", 2.0, accepted=False)], DATES, NO_LIMITS)
    assert len(out.entries) == 1
    assert out.conflicts == []


def test_entry_exit_alternation_and_anti_passback():
    scans = [
        scan("a", 1.0, mode=Mode.ENTRY_EXIT),
        scan("b", 2.0, mode=Mode.ENTRY_EXIT, direction=Direction.EXIT),
        scan("c", 3.0, mode=Mode.ENTRY_EXIT),
        scan("d", 4.0, mode=Mode.ENTRY_EXIT),
    ]
    out = reconcile(scans, DATES, NO_LIMITS)
    assert [s.scan_id for s in out.entries] == ["a", "b", "c"]
    assert [(c.scan.scan_id, c.reason) for c in out.conflicts] == [("d", Reason.ALREADY_INSIDE)]
    assert out.entry_count == 2


def test_pass_limits_replayed():
    limits = Limits(max_entries=2)
    scans = [scan("a", 1.0, date=1), scan("b", 2.0, date=2), scan("c", 3.0, date=3)]
    out = reconcile(scans, DATES, limits)
    assert [c.reason for c in out.conflicts] == [Reason.ENTRIES_EXHAUSTED]
    per_day = reconcile(scans[:2], DATES, Limits(per_day=True))
    assert [c.reason for c in per_day.conflicts] == [Reason.LIMIT_REACHED]
