"""sync.rules.step: the mode rules and pass limits, shared by edge and core; merge: another
node's scan, which may come late."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.rules import (
    ADMITTING,
    EMPTY_STATE,
    MERGE_SKEW_S,
    NO_LIMITS,
    Direction,
    Limits,
    Mode,
    Reason,
    ScanState,
    merge,
    resolve_direction,
    step,
)

E, X, A = Direction.ENTRY, Direction.EXIT, Direction.AUTO


def test_reasons_are_the_design_codes():
    assert {str(r) for r in Reason} == {
        "ok", "exit_ok", "malformed", "forged", "unknown", "cancelled", "unpaid",
        "wrong_date", "wrong_zone", "too_early", "too_late", "already_used",
        "already_inside", "not_inside", "entries_exhausted", "limit_reached",
    }
    assert ADMITTING == {Reason.OK, Reason.EXIT_OK}


@pytest.mark.parametrize(
    ("state", "mode", "direction", "date", "expected"),
    [
        (EMPTY_STATE, Mode.ENTRY_EXIT, A, 1, E),
        (ScanState(inside=1), Mode.ENTRY_EXIT, A, 1, X),
        (ScanState(inside=2), Mode.ENTRY_EXIT, A, 1, E),
        (ScanState(inside=1), Mode.SINGLE, A, 1, E),
        (ScanState(inside=1), Mode.MULTI, A, 1, E),
        (EMPTY_STATE, Mode.ENTRY_EXIT, X, 1, X),
        (ScanState(inside=1), Mode.ENTRY_EXIT, E, 1, E),
        (EMPTY_STATE, Mode.ENTRY_EXIT, A, 0, E),
    ],
)
def test_resolve_direction(state, mode, direction, date, expected):
    assert resolve_direction(state, mode, direction, date) == expected


def test_step_records_admissions():
    reason, direction, s = step(EMPTY_STATE, Mode.ENTRY_EXIT, E, 1, 10, 700, NO_LIMITS, 5.0)
    assert (reason, direction) == (Reason.OK, E)
    assert s == ScanState(1, 1, ((1, 10, 700),), 5.0)
    reason, _, s2 = step(s, Mode.ENTRY_EXIT, X, 1, 10, 700, NO_LIMITS, 6.0)
    assert reason == Reason.EXIT_OK
    assert s2 == ScanState(0, 1, ((1, 10, 700),), 6.0)
    reason, _, s3 = step(s2, Mode.ENTRY_EXIT, E, 1, 10, 700, NO_LIMITS, 7.0)
    assert reason == Reason.OK and s3.entries == 2 and s3.admitted == s.admitted


def test_refusals_leave_the_state_unchanged():
    s = ScanState(1, 1, ((1, 10, 700),), 5.0)
    for mode, direction, limits, reason in (
        (Mode.SINGLE, E, NO_LIMITS, Reason.ALREADY_USED),
        (Mode.ENTRY_EXIT, E, NO_LIMITS, Reason.ALREADY_INSIDE),
    ):
        got, _, after = step(s, mode, direction, 1, 10, 700, limits, 9.0)
        assert (got, after) == (reason, s)
    got, _, after = step(s, Mode.SINGLE, E, 2, 10, 700, Limits(max_entries=1), 9.0)
    assert (got, after) == (Reason.ENTRIES_EXHAUSTED, s)
    got, _, after = step(EMPTY_STATE, Mode.ENTRY_EXIT, X, 1, 10, 700, NO_LIMITS, 9.0)
    assert (got, after) == (Reason.NOT_INSIDE, EMPTY_STATE)


@pytest.mark.parametrize(
    ("limits", "date", "event", "day", "expected"),
    [
        (Limits(max_entries=2), 3, 12, 702, Reason.ENTRIES_EXHAUSTED),
        (Limits(max_entries=3), 3, 12, 702, Reason.OK),
        (Limits(per_event=True), 3, 10, 702, Reason.LIMIT_REACHED),
        (Limits(per_event=True), 3, 12, 700, Reason.OK),
        (Limits(per_day=True), 3, 12, 701, Reason.LIMIT_REACHED),
        (Limits(per_day=True), 3, 12, 702, Reason.OK),
        (Limits(one_day=True), 3, 12, 700, Reason.LIMIT_REACHED),
        (Limits(max_entries=2, per_day=True), 3, 12, 701, Reason.ENTRIES_EXHAUSTED),
        # Re-entering an admitted date never counts against a limit (multi mode).
        (Limits(max_entries=2, per_event=True, per_day=True, one_day=True), 1, 10, 700,
         Reason.OK),
    ],
)
def test_pass_limits(limits, date, event, day, expected):
    state = ScanState(0, 2, ((1, 10, 700), (2, 11, 701)), 1.0)
    reason, _, after = step(state, Mode.MULTI, E, date, event, day, limits, 2.0)
    assert reason == expected
    if expected == Reason.OK:
        assert after.entries == 3


def test_one_day_same_day_allowed():
    state = ScanState(0, 1, ((1, 10, 700),), 1.0)
    reason, _, _ = step(state, Mode.SINGLE, E, 2, 11, 700, Limits(one_day=True), 2.0)
    assert reason == Reason.OK


def test_state_survives_msgpack():
    import msgspec

    s = ScanState(3, 4, ((1, 10, 700), (3, 12, 702)), 12.5)
    enc = msgspec.msgpack.encode(s)
    assert msgspec.msgpack.decode(enc, type=ScanState) == s
    # Older records (fewer fields) still decode, with defaults.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode([1]), type=ScanState) == ScanState(1)


@given(st.lists(st.tuples(st.sampled_from([E, X, A]), st.sampled_from([1, 2])), max_size=40))
def test_entry_exit_per_date_alternation(scans):
    """Auto scans alternate; the holder is inside at most one date at a time."""
    s = EMPTY_STATE
    oks = 0
    for direction, date in scans:
        resolved = resolve_direction(s, Mode.ENTRY_EXIT, direction, date)
        reason, got, after = step(s, Mode.ENTRY_EXIT, resolved, date, 10, 700, NO_LIMITS, 1.0)
        assert got == resolved
        if reason == Reason.OK:
            assert s.inside != date
            assert after.inside == date
            oks += 1
        elif reason == Reason.EXIT_OK:
            assert s.inside and not after.inside
        else:
            assert after == s
        s = after
    assert s.entries == oks


modes = st.sampled_from(list(Mode))
states = st.builds(
    ScanState,
    st.sampled_from([0, 1, 2]),
    st.integers(0, 5),
    st.sampled_from([(), ((1, 10, 700),), ((1, 10, 700), (2, 10, 701))]),
    st.floats(0, 1000),
)


@given(states, modes, st.sampled_from([E, X]), st.sampled_from([1, 2]), st.floats(0, 2000))
def test_merge_is_step_unless_clearly_older_and_then_never_moves_presence(
    state, mode, direction, date, at
):
    _reason, _dir, stepped = step(state, mode, direction, date, 10, 700, NO_LIMITS, at)
    merged = merge(state, mode, direction, date, 10, 700, NO_LIMITS, at)
    if stepped is not state:  # a scan that changed it: time never goes back
        assert stepped.last_at == max(at, state.last_at)
    if at >= state.last_at - MERGE_SKEW_S:
        assert merged == stepped  # clocks too close to order: as it came
    else:
        # Clearly older than what the state saw: counted as step counts it, presence
        # and time stay; and nothing changed is the state itself (the follower skips it).
        assert (merged.inside, merged.last_at) == (state.inside, state.last_at)
        assert (merged.entries, merged.admitted) == (stepped.entries, stepped.admitted)
        assert (merged is state) == (merged == state)


def test_a_late_exit_counts_for_nothing_and_a_late_entry_counts_but_stays_out():
    inside = ScanState(1, 2, ((1, 10, 700),), 500.0)
    late, close = 500.0 - MERGE_SKEW_S - 1, 500.0 - MERGE_SKEW_S + 1
    assert merge(inside, Mode.ENTRY_EXIT, X, 1, 10, 700, NO_LIMITS, late) is inside
    assert merge(inside, Mode.ENTRY_EXIT, X, 1, 10, 700, NO_LIMITS, close) == ScanState(
        0, 2, ((1, 10, 700),), 500.0)
    outside = ScanState(0, 2, ((1, 10, 700),), 500.0)
    assert merge(outside, Mode.ENTRY_EXIT, E, 1, 10, 700, NO_LIMITS, late) == ScanState(
        0, 3, ((1, 10, 700),), 500.0)
    assert merge(outside, Mode.ENTRY_EXIT, E, 2, 10, 701, NO_LIMITS, late) == ScanState(
        0, 3, ((1, 10, 700), (2, 10, 701)), 500.0)
    # Refused by step (inside for that date): nothing, also when late.
    assert merge(inside, Mode.ENTRY_EXIT, E, 1, 10, 700, NO_LIMITS, late) is inside
