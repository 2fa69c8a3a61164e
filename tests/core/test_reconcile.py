"""sync.reconcile: pure replay of one ticket's scans from several nodes, and the
differential check against a single node's own decisions (``edge.decision.decide``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.decision import decide, limits_of
from edge.model import GateView, Result
from sync.codes import Kind
from sync.reconcile import reconcile
from sync.rules import EMPTY_STATE, NO_LIMITS, Direction, Limits, Mode, Reason
from sync.snapshot import Channel, Date, PassProduct, Record, Status
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


# Differential: one node deciding alone, in time order, is what the replay reproduces.

CALENDAR = {
    1: Date(1, 10, 1100.0, 2000.0, 1000.0, 700),
    2: Date(2, 10, 3100.0, 4000.0, 3000.0, 701),
    3: Date(3, 11, 3600.0, 4500.0, 3500.0, 701),
    4: Date(4, 11, 6100.0, 7000.0, 6000.0, 702),
}
REPLAY_DATES = {d.id: (d.event, d.day) for d in CALENDAR.values()}

products = st.builds(
    PassProduct,
    id=st.just(5),
    name=st.just("season"),
    events=st.just((10, 11)),
    choice=st.just(False),
    max_entries=st.integers(0, 3),
    per_event=st.booleans(),
    per_day=st.booleans(),
    one_day=st.booleans(),
)
gates = st.lists(
    st.tuples(
        st.sampled_from(list(Mode)),
        st.one_of(st.just(set(CALENDAR)), st.sets(st.sampled_from(sorted(CALENDAR)), min_size=1)),
    ),
    min_size=1,
    max_size=3,
)
# Mostly inside the dates' windows, so most scans get as far as the mode rules.
times = st.one_of(
    st.floats(1000.0, 2000.0),
    st.floats(3000.0, 4500.0),
    st.floats(6000.0, 7000.0),
    st.floats(0.0, 8000.0),
)
scans_in = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(list(Direction)), times),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    ticket_date=st.sampled_from([0, *sorted(CALENDAR)]),
    product=products,
    gate_specs=gates,
    taken=scans_in,
)
def test_replay_of_one_node_reproduces_its_answers(ticket_date, product, gate_specs, taken):
    if ticket_date:
        record = Record(7, Kind.TICKET, Status.VALID, 10, ticket_date, 0, b"d" * 16)
        product_of, limits = None, NO_LIMITS
    else:
        record = Record(7, Kind.PASS, Status.VALID, product.id, 0, 0, b"d" * 16, Channel.ONLINE)
        product_of, limits = product, limits_of(product)
    views = [
        GateView(f"g{i}", mode, {d: CALENDAR[d] for d in dates}, frozenset())
        for i, (mode, dates) in enumerate(gate_specs)
    ]
    state = EMPTY_STATE
    log: list[ScanItem] = []
    for n, (gate_index, direction, at) in enumerate(sorted(taken, key=lambda s: s[2])):
        gate = views[gate_index % len(views)]
        decision = decide(record, state, gate, at, direction, product_of)
        if decision.new_state is not None:
            state = decision.new_state
        log.append(
            ScanItem(
                scan_id=f"s{n:03d}",
                ticket=7,
                result=str(decision.result),
                reason=decision.reason,
                direction=decision.direction,
                gate=gate.name,
                mode=gate.mode,
                date=decision.date,
                scanned_at=at,
                logged_at=at,
            )
        )
    out = reconcile(reversed(log), REPLAY_DATES, limits)
    accepted = [s for s in log if s.result == Result.ACCEPTED]
    assert out.conflicts == []
    assert out.entries == accepted
    assert out.replayed == {s.scan_id: s.reason for s in accepted}
    assert out.state == state
