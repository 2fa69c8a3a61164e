"""Decisions per second of the pure ``edge.decision.decide`` on a realistic mix.

The mix, built from the benchmark venue (``bench.dataset``): first entries of valid
tickets at a single-entry gate (most of it), repeats of admitted tickets
(``already_used``), entries and exits at an entry/exit gate, passes with limits at
per-event gates (with states that hold earlier admissions), and tickets refused on
their record (cancelled, unpaid, wrong date, too early / too late, wrong zone).

Measured on one core (pinned when the machine has two or more): the best of several
timed rounds over the prepared scans, loop overhead included.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections import Counter
from typing import Any

from bench.dataset import Venue, build_venue, gate_profiles, generate_chunk
from bench.report import ForeignCpu, emit, pin, wait_quiet
from edge.decision import decide
from edge.model import Direction, GateView, Mode
from sync.codes import Kind
from sync.rules import EMPTY_STATE, ScanState
from sync.snapshot import PassProduct, Record, Status

Scan = tuple[Record, ScanState, GateView, Direction, PassProduct | None]


def gate_views(venue: Venue) -> dict[str, GateView]:
    """Resolve the dataset's gate profiles against its catalogue."""
    dates = {d.id: d for d in venue.catalog.dates}
    views: dict[str, GateView] = {}
    for name, profile in gate_profiles(venue).items():
        ids = set(profile.get("dates") or ())
        for event in profile.get("events") or ():
            ids.update(d.id for d in venue.catalog.dates if d.event == event)
        views[name] = GateView(
            name,
            Mode(profile["mode"]),
            {i: dates[i] for i in sorted(ids)},
            frozenset(profile.get("zones") or ()),
        )
    return views


def build_mix(size: int, now: float, seed: int = 1) -> list[Scan]:
    """*size* scans in a realistic proportion, in shuffled order."""
    venue = build_venue(now)
    gates = gate_views(venue)
    products = {p.id: p for p in venue.catalog.products}
    records, _ = generate_chunk(1, max(2000, size // 4) + 1, venue, seed, None)
    rng = random.Random(seed)
    valid_open = [
        r
        for r in records
        if r.kind == Kind.TICKET and r.status == Status.VALID and r.date in venue.open_dates
    ]
    open_ids = {r.id for r in valid_open}
    refused = [r for r in records if r.kind == Kind.TICKET and r.id not in open_ids]
    passes = [r for r in records if r.kind == Kind.PASS and r.status == Status.VALID]
    main, inout, vip = gates["main"], gates["inout"], gates["vip"]
    event_gates = [gates[f"event-{e}"] for e in (1, 2, 3, 4, 5)]
    auto, entry, exit_ = Direction.AUTO, Direction.ENTRY, Direction.EXIT

    def after(record: Record, gate: GateView, product: PassProduct | None = None) -> ScanState:
        state = decide(record, EMPTY_STATE, gate, now, auto, product).new_state
        return state if state is not None else EMPTY_STATE

    mix: list[Scan] = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.70:  # first entry, single mode
            mix.append((rng.choice(valid_open), EMPTY_STATE, main, auto, None))
        elif roll < 0.78:  # repeat: already used
            record = rng.choice(valid_open)
            mix.append((record, after(record, main), main, auto, None))
        elif roll < 0.86:  # entry/exit gate: entry, exit, auto while inside
            record = rng.choice(valid_open)
            inside = after(record, inout)
            pick = rng.random()
            if pick < 0.4:
                mix.append((record, EMPTY_STATE, inout, entry, None))
            elif pick < 0.8:
                mix.append((record, inside, inout, exit_, None))
            else:
                mix.append((record, inside, inout, auto, None))
        elif roll < 0.93:  # passes with limits, with earlier admissions
            record = rng.choice(passes)
            product = products[record.event]
            state = EMPTY_STATE
            for gate in rng.sample(event_gates, rng.randrange(0, 4)):
                d = decide(record, state, gate, now, auto, product)
                if d.new_state is not None:
                    state = d.new_state
            mix.append((record, state, rng.choice(event_gates), auto, product))
        elif roll < 0.97:  # refused on the record
            mix.append((rng.choice(refused), EMPTY_STATE, main, auto, None))
        else:  # wrong zone at the VIP gate
            mix.append((rng.choice(valid_open), EMPTY_STATE, vip, auto, None))
    return mix


def run_round(mix: list[Scan], now: float) -> float:
    """Seconds for one pass of ``decide`` over *mix*."""
    started = time.perf_counter()
    for record, state, gate, direction, product in mix:
        decide(record, state, gate, now, direction, product)
    return time.perf_counter() - started


def measure(size: int, seconds: float, now: float) -> dict[str, Any]:
    mix = build_mix(size, now)
    reasons = Counter(str(decide(r, s, g, now, d, p).reason) for r, s, g, d, p in mix)
    run_round(mix, now)  # warm up
    best = float("inf")
    rounds = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        deadline = time.perf_counter() + seconds
        while rounds < 3 or time.perf_counter() < deadline:
            best = min(best, run_round(mix, now))
            rounds += 1
            if rounds >= 1000:
                break
    finally:
        if gc_was:
            gc.enable()
    return {
        "decisions_per_s": round(len(mix) / best),
        "ns_per_decision": round(best / len(mix) * 1e9, 1),
        "mix_size": len(mix),
        "rounds": rounds,
        "reasons": {k: round(v / len(mix), 4) for k, v in reasons.most_common()},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # In a node each decided record was just decoded from LMDB, so it is hot in the CPU
    # cache; a mix far larger than the cache measures memory stalls instead.
    parser.add_argument("--size", type=int, default=20_000, help="scans in the mix")
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent measuring")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--now", type=float, default=None)
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="seconds to wait for a quiet machine"
    )


def main(args: argparse.Namespace) -> int:
    pinned = pin(0, 0)
    now = time.time() if args.now is None else args.now
    size, seconds = (2000, 0.05) if args.quick else (args.size, args.seconds)
    quiet = 0.0 if args.quick else wait_quiet(args.quiet_wait)
    meter = ForeignCpu()
    figures = measure(size, seconds, now)
    figures["pinned"] = pinned
    figures["quiet_before_cores"] = quiet
    figures["foreign_cores"] = meter.cores()
    figures["steal_cores"] = meter.stolen()
    figures["target_per_s"] = 500_000
    print(
        f"decide: {figures['decisions_per_s']:,} decisions/s "
        f"({figures['ns_per_decision']} ns each) on one core"
    )
    emit(figures)
    return 0
