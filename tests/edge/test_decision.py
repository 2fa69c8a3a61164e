"""The pure decision: a table in the documented check order, and hypothesis invariants.

No event loop, no I/O: ``decide(record, state, gate, now, direction, product)``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.decision import decide
from edge.model import GateView, Result
from sync.codes import Kind
from sync.rules import EMPTY_STATE, Direction, Mode, Reason, ScanState
from sync.snapshot import Date, PassProduct, Record, Status

E, X, A = Direction.ENTRY, Direction.EXIT, Direction.AUTO
SINGLE, EE, MULTI = Mode.SINGLE, Mode.ENTRY_EXIT, Mode.MULTI

# Event 1: date 10 today (day 100), date 11 tomorrow, date 12 yesterday.
# Event 2: date 20 today; event 3: date 30 today; event 4: date 40 tomorrow.
D10 = Date(10, 1, start=10_000, end=20_000, doors_open=8_000, day=100)
D11 = Date(11, 1, start=100_000, end=110_000, doors_open=98_000, day=101)
D12 = Date(12, 1, start=-80_000, end=-70_000, doors_open=-82_000, day=99)
D20 = Date(20, 2, start=10_000, end=20_000, doors_open=8_000, day=100)
D30 = Date(30, 3, start=12_000, end=22_000, doors_open=9_000, day=100)
D40 = Date(40, 4, start=100_000, end=110_000, doors_open=98_000, day=101)
DATES = {d.id: d for d in (D10, D11, D12, D20, D30, D40)}
NOW = 15_000.0

SEASON = PassProduct(500, "Season", events=(1, 2, 3, 4))
ONE_ENTRY = PassProduct(501, "One show", events=(1, 2, 3, 4), max_entries=1)
TWO_ENTRIES = PassProduct(506, "Two shows", events=(1, 2, 3, 4), max_entries=2)
PER_EVENT = PassProduct(502, "Per event", events=(1, 2, 3, 4), per_event=True)
PER_DAY = PassProduct(503, "Per day", events=(1, 2, 3, 4), per_day=True)
CHOICE = PassProduct(504, "Choice", events=(1, 2, 3, 4), choice=True)
ONE_DAY = PassProduct(505, "One day", events=(1, 2, 3, 4), one_day=True)
PRODUCTS = {p.id: p for p in (SEASON, ONE_ENTRY, TWO_ENTRIES, PER_EVENT, PER_DAY, CHOICE,
                              ONE_DAY)}


def gate(mode: Mode = SINGLE, dates=(10,), zones=()) -> GateView:
    return GateView("g", mode, {i: DATES[i] for i in dates}, frozenset(zones))


def ticket(date=10, zone=100, status=Status.VALID) -> Record:
    return Record(1, Kind.TICKET, status, DATES[date].event, date, zone, b"d" * 16)


def pass_(product=500, dates=(), status=Status.VALID) -> Record:
    return Record(2, Kind.PASS, status, product, 0, 0, b"p" * 16, dates=dates)


def admitted(*date_ids: int) -> tuple[tuple[int, int, int], ...]:
    return tuple((i, DATES[i].event, DATES[i].day) for i in date_ids)


def state(*date_ids: int, inside: int = 0) -> ScanState:
    return ScanState(inside, len(date_ids), admitted(*date_ids), 1.0)


def run(record, st_, g, now=NOW, direction=A):
    product = PRODUCTS.get(record.event) if record.kind == Kind.PASS else None
    return decide(record, st_, g, now, direction, product)


T = ticket
CASES = [
    # (id, record, state, gate, now, direction, reason)
    # 1. cancelled / unpaid come first, whatever else is wrong.
    ("cancelled-first", T(11, 999, Status.CANCELLED), state(11), gate(zones=(100,)), 1e9, E,
     Reason.CANCELLED),
    ("unpaid-before-date", T(11, status=Status.UNPAID), EMPTY_STATE, gate(), NOW, E,
     Reason.UNPAID),
    ("cancelled-exit", T(status=Status.CANCELLED), state(10, inside=10), gate(EE), NOW, X,
     Reason.CANCELLED),
    ("pass-cancelled", pass_(status=Status.CANCELLED), EMPTY_STATE, gate(), NOW, E,
     Reason.CANCELLED),
    # 2. wrong_date before zone and window.
    ("wrong-date-before-zone", T(11, 999), EMPTY_STATE, gate(zones=(100,)), 0, E,
     Reason.WRONG_DATE),
    ("wrong-date-other-event", T(20), EMPTY_STATE, gate(dates=(10, 11)), NOW, E,
     Reason.WRONG_DATE),
    ("wrong-date-empty-gate", T(), EMPTY_STATE, gate(dates=()), NOW, E, Reason.WRONG_DATE),
    ("wrong-date-on-exit", T(11), state(11, inside=11), gate(EE), NOW, X, Reason.WRONG_DATE),
    ("pass-covers-nothing", pass_(504, dates=(20,)), EMPTY_STATE, gate(dates=(10,)), NOW, E,
     Reason.WRONG_DATE),
    # 3. wrong_zone before the window and the mode rules.
    ("wrong-zone-before-early", T(zone=101), EMPTY_STATE, gate(zones=(100,)), 0, E,
     Reason.WRONG_ZONE),
    ("wrong-zone-before-used", T(zone=101), state(10), gate(zones=(100,)), NOW, E,
     Reason.WRONG_ZONE),
    ("zone-0-any-zone", T(zone=0), EMPTY_STATE, gate(zones=(100,)), NOW, E, Reason.OK),
    ("no-zones-any-zone", T(zone=101), EMPTY_STATE, gate(), NOW, E, Reason.OK),
    ("zone-in-list", T(zone=101), EMPTY_STATE, gate(zones=(100, 101)), NOW, E, Reason.OK),
    # 4. too_early / too_late, window bounds included, before the mode rules.
    ("too-early", T(), EMPTY_STATE, gate(), 7_999, E, Reason.TOO_EARLY),
    ("doors-open-exact", T(), EMPTY_STATE, gate(), 8_000, E, Reason.OK),
    ("end-exact", T(), EMPTY_STATE, gate(), 20_000, E, Reason.OK),
    ("too-late", T(), EMPTY_STATE, gate(), 20_001, E, Reason.TOO_LATE),
    ("too-late-before-used", T(), state(10), gate(), 20_001, E, Reason.TOO_LATE),
    ("too-early-auto", T(11), EMPTY_STATE, gate(dates=(11,)), NOW, A, Reason.TOO_EARLY),
    ("exit-after-end", T(), state(10, inside=10), gate(EE), 50_000, X, Reason.EXIT_OK),
    ("auto-exit-after-end", T(), state(10, inside=10), gate(EE), 50_000, A, Reason.EXIT_OK),
    ("pass-too-early", pass_(), EMPTY_STATE, gate(dates=(11,)), NOW, E, Reason.TOO_EARLY),
    ("pass-too-late", pass_(), EMPTY_STATE, gate(dates=(12,)), NOW, E, Reason.TOO_LATE),
    ("pass-open-wins", pass_(), EMPTY_STATE, gate(dates=(11, 12, 10)), NOW, E, Reason.OK),
    ("pass-exit-after-end", pass_(), state(12, inside=12), gate(EE, dates=(12,)), NOW, X,
     Reason.EXIT_OK),
    ("pass-auto-exit-after-end", pass_(), state(12, inside=12), gate(EE, dates=(12,)), NOW, A,
     Reason.EXIT_OK),
    # 5. mode rules.
    ("single-first", T(), EMPTY_STATE, gate(), NOW, A, Reason.OK),
    ("single-again", T(), state(10), gate(), NOW, E, Reason.ALREADY_USED),
    ("single-other-date-seen", T(), state(11), gate(), NOW, E, Reason.OK),
    ("single-exit", T(), state(10), gate(), NOW, X, Reason.EXIT_OK),
    ("ee-entry", T(), EMPTY_STATE, gate(EE), NOW, E, Reason.OK),
    ("ee-inside", T(), state(10, inside=10), gate(EE), NOW, E, Reason.ALREADY_INSIDE),
    ("ee-not-inside", T(), state(10), gate(EE), NOW, X, Reason.NOT_INSIDE),
    ("ee-auto-out", T(), state(10, inside=10), gate(EE), NOW, A, Reason.EXIT_OK),
    ("ee-auto-in", T(), state(10), gate(EE), NOW, A, Reason.OK),
    ("ee-inside-yesterday", T(), state(12, inside=12), gate(EE), NOW, A, Reason.OK),
    ("multi-again", T(), state(10), gate(MULTI), NOW, E, Reason.OK),
    ("multi-exit", T(), state(10), gate(MULTI), NOW, X, Reason.EXIT_OK),
    # Pass limits.
    ("max-entries", pass_(501), state(20), gate(), NOW, E, Reason.ENTRIES_EXHAUSTED),
    ("max-entries-same-date-multi", pass_(501), state(10), gate(MULTI), NOW, E, Reason.OK),
    ("max-entries-not-yet", pass_(506), state(20), gate(), NOW, E, Reason.OK),
    ("exhausted-before-limit", pass_(501), state(12), gate(), NOW, E,
     Reason.ENTRIES_EXHAUSTED),
    ("per-event", pass_(502), state(12), gate(), NOW, E, Reason.LIMIT_REACHED),
    ("per-event-other", pass_(502), state(20), gate(), NOW, E, Reason.OK),
    ("per-day", pass_(503), state(20), gate(), NOW, E, Reason.LIMIT_REACHED),
    ("per-day-other-day", pass_(503), state(12), gate(), NOW, E, Reason.OK),
    ("one-day", pass_(505), state(12), gate(), NOW, E, Reason.LIMIT_REACHED),
    ("one-day-same-day", pass_(505), state(20, 30), gate(), NOW, E, Reason.OK),
    ("choice-chosen", pass_(504, dates=(10,)), EMPTY_STATE, gate(), NOW, E, Reason.OK),
    ("limit-after-used", pass_(501), state(10), gate(), NOW, E, Reason.ALREADY_USED),
]


@pytest.mark.parametrize(
    ("record", "st_", "g", "now", "direction", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decision_table(record, st_, g, now, direction, reason):
    decision = decide(record, st_, g, now, direction,
                      PRODUCTS.get(record.event) if record.kind == Kind.PASS else None)
    assert decision.reason == reason
    accepted = reason in (Reason.OK, Reason.EXIT_OK)
    assert decision.result == (Result.ACCEPTED if accepted else Result.REJECTED)
    assert decision.direction in (E, X)
    if not accepted:
        assert decision.new_state is None
    elif reason == Reason.OK:
        assert decision.direction == E
        assert decision.new_state.entries == st_.entries + 1
        assert decision.new_state.last_at == now
    else:
        assert decision.direction == X


def test_decision_reports_the_date_and_inside():
    d = run(pass_(), EMPTY_STATE, gate(EE, dates=(11, 20)), NOW, E)
    assert (d.reason, d.date) == (Reason.OK, 20)
    assert d.new_state.inside == 20
    assert d.new_state.admitted == admitted(20)
    out = run(pass_(), d.new_state, gate(EE, dates=(11, 20)), NOW + 1, A)
    assert (out.reason, out.direction, out.date) == (Reason.EXIT_OK, X, 20)
    assert out.new_state.inside == 0 and out.new_state.entries == 1


def test_exit_in_single_mode_changes_nothing():
    before = state(10)
    d = run(ticket(), before, gate(), NOW, X)
    assert d.reason == Reason.EXIT_OK
    assert d.new_state in (None, before)


def test_refusal_direction_auto_is_reported_as_entry():
    d = run(ticket(status=Status.CANCELLED), EMPTY_STATE, gate(), NOW, A)
    assert d.direction == E


# -- invariants --------------------------------------------------------------------

directions = st.sampled_from([E, X, A])
in_window = st.floats(min_value=D10.doors_open, max_value=D10.end, allow_nan=False)
anytime = st.floats(min_value=-1e5, max_value=2e5, allow_nan=False)


@given(st.lists(st.tuples(directions, anytime), max_size=30))
def test_single_admits_a_ticket_at_most_once(scans):
    s, oks = EMPTY_STATE, 0
    g = gate(SINGLE)
    for direction, now in scans:
        d = decide(ticket(), s, g, now, direction)
        if d.new_state is not None:
            s = d.new_state
        oks += d.reason == Reason.OK
    assert oks <= 1
    assert s.entries == oks


@given(st.lists(st.tuples(directions, in_window), max_size=40))
def test_entry_exit_alternates(scans):
    s = EMPTY_STATE
    g = gate(EE)
    accepted = []
    for direction, now in scans:
        d = decide(ticket(), s, g, now, direction)
        if d.result == Result.ACCEPTED:
            accepted.append(d.direction)
            s = d.new_state
        else:
            assert d.reason in (Reason.ALREADY_INSIDE, Reason.NOT_INSIDE)
            # A refusal is exactly the move the alternation forbids.
            expected = X if len(accepted) % 2 else E
            assert d.direction != expected
        assert d.direction != A
    assert accepted == [E if i % 2 == 0 else X for i in range(len(accepted))]
    assert s.inside == (10 if len(accepted) % 2 else 0)


@given(st.lists(st.tuples(directions, in_window, st.sampled_from([0, 100, 101])),
                max_size=30),
       st.sampled_from([(), (100,), (100, 101)]))
def test_multi_never_refuses_a_valid_ticket_in_its_window(scans, zones):
    g = gate(MULTI, dates=(10, 20), zones=zones)
    s = EMPTY_STATE
    entries = 0
    for direction, now, zone in scans:
        if zones and zone and zone not in zones:
            continue
        d = decide(ticket(zone=zone), s, g, now, direction)
        assert d.result == Result.ACCEPTED, d
        if d.reason == Reason.OK:
            entries += 1
        s = d.new_state or s
    assert s.entries == entries


@given(st.lists(st.tuples(directions, in_window), max_size=20))
def test_multi_never_refuses_a_valid_pass_in_its_window(scans):
    g = gate(MULTI, dates=(10,))
    s = EMPTY_STATE
    for direction, now in scans:
        d = decide(pass_(), s, g, now, direction, SEASON)
        assert d.result == Result.ACCEPTED
        s = d.new_state or s


# Dates on several events and days, each one's own window; a scan at a gate for one date.
LIMIT_DATES = [
    Date(100 + i, event, start=day * 100_000 + 10_000, end=day * 100_000 + 20_000,
         doors_open=day * 100_000 + 8_000, day=day)
    for i, (event, day) in enumerate(
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 3), (1, 3), (4, 2)])
]


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=4),
    st.booleans(), st.booleans(), st.booleans(),
    st.sampled_from([SINGLE, MULTI, EE]),
    st.lists(st.tuples(st.integers(0, len(LIMIT_DATES) - 1), directions), max_size=30),
)
def test_pass_limits_never_exceeded(max_entries, per_event, per_day, one_day, mode, scans):
    product = PassProduct(600, "P", events=(1, 2, 3, 4), max_entries=max_entries,
                          per_event=per_event, per_day=per_day, one_day=one_day)
    record = Record(3, Kind.PASS, Status.VALID, 600, 0, 0, b"x" * 16)
    s = EMPTY_STATE
    for index, direction in scans:
        date = LIMIT_DATES[index]
        g = GateView("g", mode, {date.id: date}, frozenset())
        d = decide(record, s, g, date.start, direction, product)
        if d.new_state is not None:
            s = d.new_state
        if d.reason in (Reason.ENTRIES_EXHAUSTED, Reason.LIMIT_REACHED):
            assert d.result == Result.REJECTED
    used = s.admitted
    assert len({a[0] for a in used}) == len(used)
    if max_entries:
        assert len(used) <= max_entries
    if per_event:
        assert len({a[1] for a in used}) == len(used)
    if per_day:
        assert len({a[2] for a in used}) == len(used)
    if one_day:
        assert len({a[2] for a in used}) <= 1
