"""A realistic venue snapshot for benchmarks and load tests.

``python -m bench dataset --tickets N --out SNAPSHOT --codes CODES.jsonl [--seed S] [--now T]``

The venue, relative to ``now``:

==  =====================  ===============================================
id  event                  dates (``*`` = admission window open at now)
==  =====================  ===============================================
1   Rock Night             1*
2   Jazz Club              2*
3   Comedy Hour            3*
4   Summer Festival        4 (yesterday), 5*, 6 (tomorrow)
5   League Match           7 (last week), 8*, 9 (next week)
6   Matinee                10 (doors in three hours: too early)
7   Last Night             11 (ended two hours ago: too late)
==  =====================  ===============================================

Each event has zones (Floor, Balcony, and VIP for the big ones). Records are tickets
(most on open dates), passes of three products (three-show card: ``max_entries``;
all-events pass: ``per_event``; day pass: ``per_day``), reseller tickets with plain
alphanumeric codes, cancelled (~3%) and unpaid (~2%) orders, and unsold printed box
office stock. Ids run 1..N; passes share the id space.

Besides the snapshot it writes ``CODES.jsonl`` (one object per code: what a load
generator needs to build a realistic scan mix, including validly signed codes that are
*not* in the snapshot, ``in_snapshot: false``, as if sold after the last sync) and
``gates.json`` next to the snapshot (gate profiles to ``PUT``).

Generation and Ed25519 signing run in a process pool over every core, chunk by chunk,
with a bounded number of chunks in flight: memory stays flat at any N.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.report import emit, note
from sync.codes import Claims, Kind, code_digest, sign
from sync.snapshot import (
    Catalog,
    Channel,
    Date,
    Event,
    Header,
    PassProduct,
    PublicKey,
    Record,
    Status,
    Zone,
    write_snapshot,
)

KEY_ID = 1
VENUE = "Bench Arena"
CHUNK = 5000
HOUR = 3600.0
DAY = 86400.0

PASS_SHARE = 0.02
PLAIN_SHARE = 0.06
UNSOLD_SHARE = 0.02
CANCELLED_SHARE = 0.03
UNPAID_SHARE = 0.02
OPEN_SHARE = 0.85
"""Share of tickets on a date whose admission window is open at now."""

_FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Elif",
    "Femi",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kenji",
    "Lea",
    "Marco",
    "Nora",
    "Omar",
    "Paula",
    "Quentin",
    "Rosa",
    "Sami",
    "Tara",
]
_LAST = [
    "Meier",
    "Rossi",
    "Dubois",
    "Novak",
    "Silva",
    "Keller",
    "Haddad",
    "Weber",
    "Larsen",
    "Moreau",
    "Costa",
    "Fischer",
    "Bianchi",
    "Okafor",
    "Schmid",
    "Nguyen",
]
_PLAIN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class CodeLine(msgspec.Struct):
    """One line of CODES.jsonl."""

    code: str
    ticket: int
    kind: str
    """ticket | pass | plain"""
    status: str
    """valid | cancelled | unpaid"""
    date: int
    event: int
    zone: int
    open: bool
    """Whether the code's date (a pass: any covered date) admits at ``now``."""
    channel: str = "online"
    sold: bool = True
    product: int = 0
    in_snapshot: bool = True


@dataclass(frozen=True, slots=True)
class Venue:
    """The catalogue part of a dataset, and what the record generator needs from it."""

    catalog: Catalog
    open_dates: tuple[int, ...]
    other_dates: tuple[int, ...]
    zones_by_event: dict[int, tuple[int, ...]]
    vip_zones: tuple[int, ...]
    products: tuple[int, ...]


def _date(ident: int, event: int, doors_open: float, start: float, end: float) -> Date:
    day = datetime.fromtimestamp(start, UTC).date().toordinal()
    return Date(ident, event, start, end, doors_open, day)


def build_venue(now: float, public_key: bytes = b"") -> Venue:
    """The catalogue: events, dates around *now*, zones, pass products, the public key."""
    events = [
        Event(1, "Rock Night", VENUE),
        Event(2, "Jazz Club", VENUE),
        Event(3, "Comedy Hour", VENUE),
        Event(4, "Summer Festival", VENUE),
        Event(5, "League Match", VENUE),
        Event(6, "Matinee", VENUE),
        Event(7, "Last Night", VENUE),
    ]

    def tonight(ident: int, event: int) -> Date:
        return _date(ident, event, now - 1 * HOUR, now + 0.5 * HOUR, now + 4 * HOUR)

    def shifted(ident: int, event: int, offset: float) -> Date:
        start = now + offset
        return _date(ident, event, start - HOUR, start, start + 3 * HOUR)

    dates = [
        tonight(1, 1),
        tonight(2, 2),
        tonight(3, 3),
        shifted(4, 4, -DAY),
        tonight(5, 4),
        shifted(6, 4, DAY),
        shifted(7, 5, -7 * DAY),
        tonight(8, 5),
        shifted(9, 5, 7 * DAY),
        shifted(10, 6, 4 * HOUR),
        shifted(11, 7, -5 * HOUR),
    ]
    zones: list[Zone] = []
    zones_by_event: dict[int, tuple[int, ...]] = {}
    vip: list[int] = []
    for event in events:
        names = [("Floor", 4000), ("Balcony", 1500)]
        if event.id in (1, 4, 5):
            names.append(("VIP", 300))
        ids: list[int] = []
        for name, capacity in names:
            zone = Zone(len(zones) + 1, event.id, name, capacity)
            zones.append(zone)
            ids.append(zone.id)
            if name == "VIP":
                vip.append(zone.id)
        zones_by_event[event.id] = tuple(ids)
    all_events = tuple(e.id for e in events)
    products = [
        PassProduct(1, "Three-show card", all_events, max_entries=3),
        PassProduct(2, "All-events pass", all_events, per_event=True),
        PassProduct(3, "Day pass", all_events, per_day=True),
    ]
    keys = [PublicKey(KEY_ID, public_key)] if public_key else []
    catalog = Catalog(VENUE, events, dates, zones, products, keys)
    open_dates = tuple(d.id for d in dates if d.doors_open <= now <= d.end)
    other = tuple(d.id for d in dates if d.id not in open_dates)
    return Venue(catalog, open_dates, other, zones_by_event, tuple(vip), (1, 2, 3))


def gate_profiles(venue: Venue) -> dict[str, dict[str, Any]]:
    """Gate profiles for ``PUT /api/v1/gates/{gate}``, by gate name.

    ``main`` admits today's dates (so tickets for the matinee are too early, for last
    night too late, for tomorrow's festival day the wrong date); ``inout`` is an
    entry/exit gate for the open dates; ``vip`` admits VIP zones only; ``passes`` is a
    multi-entry gate; ``event-N`` gates admit one event each (where pass limits show).
    """
    catalog = venue.catalog
    today = [d.id for d in catalog.dates if abs(d.start - catalog.dates[0].start) < 12 * HOUR]
    gates: dict[str, dict[str, Any]] = {
        "main": {"mode": "single", "dates": today},
        "inout": {"mode": "entry_exit", "dates": list(venue.open_dates)},
        "vip": {"mode": "single", "dates": list(venue.open_dates), "zones": list(venue.vip_zones)},
        "passes": {"mode": "multi", "events": [e.id for e in catalog.events]},
    }
    for event in catalog.events:
        gates[f"event-{event.id}"] = {"mode": "single", "events": [event.id]}
    return gates


def private_key_for(seed: int) -> Ed25519PrivateKey:
    """The dataset's issuing key, derived from the seed so datasets are reproducible."""
    raw = hashlib.sha256(f"gatekeeper-bench-key:{seed}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# Per-process state of the pool workers (set once by ``_init_worker``).
_worker: dict[str, Any] = {}


def _init_worker(key_raw: bytes, now: float, seed: int) -> None:
    _worker["key"] = Ed25519PrivateKey.from_private_bytes(key_raw)
    _worker["venue"] = build_venue(now)
    _worker["seed"] = seed


def _plain_code(rng: random.Random, ident: int) -> str:
    body = "".join(rng.choice(_PLAIN_ALPHABET) for _ in range(8))
    return f"R{body}{_base36(ident)}"


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def generate_chunk(
    start: int,
    end: int,
    venue: Venue,
    seed: int,
    key: Ed25519PrivateKey | None,
) -> tuple[list[Record], bytes]:
    """Records ``start..end-1`` and their CODES.jsonl lines; deterministic per (seed, start).

    With ``key=None`` signed codes are left unsigned (a placeholder text), for
    benchmarks that need records but no codes.
    """
    rng = random.Random(f"{seed}:{start}")
    catalog = venue.catalog
    date_event = {d.id: d.event for d in catalog.dates}
    open_set = set(venue.open_dates)
    records: list[Record] = []
    lines: list[bytes] = []
    encode = msgspec.json.encode
    order = ""
    order_left = 0
    holder = ""
    for ident in range(start, end):
        if order_left <= 0:
            order_left = rng.choice((1, 1, 2, 2, 2, 3, 4, 4, 6))
            order = f"B{ident:08d}"
            holder = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            roll = rng.random()
            order_status = (
                Status.CANCELLED
                if roll < CANCELLED_SHARE
                else Status.UNPAID
                if roll < CANCELLED_SHARE + UNPAID_SHARE
                else Status.VALID
            )
        order_left -= 1
        status = order_status
        channel = Channel.ONLINE
        sold = True
        rec_order, rec_holder = order, holder
        roll = rng.random()
        product = 0
        if roll < PASS_SHARE:
            kind = Kind.PASS
            product = venue.products[ident % len(venue.products)]
            event, date, zone = product, 0, 0
            is_open = True
            text_kind = "pass"
        else:
            kind = Kind.TICKET
            if rng.random() < OPEN_SHARE:
                date = rng.choice(venue.open_dates)
            else:
                date = rng.choice(venue.other_dates)
            event = date_event[date]
            zones = venue.zones_by_event[event]
            zone = zones[0] if rng.random() < 0.7 else rng.choice(zones)
            is_open = date in open_set
            text_kind = "ticket"
            if roll < PASS_SHARE + PLAIN_SHARE:
                channel = Channel.RESELLER
                text_kind = "plain"
            elif roll < PASS_SHARE + PLAIN_SHARE + UNSOLD_SHARE:
                channel = Channel.BOX_OFFICE
                sold = False
                status = Status.VALID
                rec_order, rec_holder = "", ""
        if text_kind == "plain":
            code = _plain_code(rng, ident)
        elif key is not None:
            code = sign(Claims(KEY_ID, kind, ident, event, date, zone), key)
        else:
            code = f"UNSIGNED{ident}"
        records.append(
            Record(
                ident,
                kind,
                status,
                event,
                date,
                zone,
                code_digest(code),
                channel,
                sold,
                rec_order,
                rec_holder,
            )
        )
        lines.append(
            encode(
                CodeLine(
                    code,
                    ident,
                    text_kind,
                    status.name.lower(),
                    date,
                    event,
                    zone,
                    is_open,
                    channel.name.lower(),
                    sold,
                    product,
                )
            )
        )
    lines.append(b"")
    return records, b"\n".join(lines)


def _chunk_job(bounds: tuple[int, int]) -> tuple[bytes, bytes]:
    records, lines = generate_chunk(
        bounds[0], bounds[1], _worker["venue"], _worker["seed"], _worker["key"]
    )
    return msgspec.msgpack.encode(records), lines


def extra_codes(
    first_id: int, count: int, venue: Venue, key: Ed25519PrivateKey, seed: int
) -> list[CodeLine]:
    """Validly signed tickets on open dates that the snapshot does not hold."""
    rng = random.Random(f"{seed}:extra")
    date_event = {d.id: d.event for d in venue.catalog.dates}
    out: list[CodeLine] = []
    for ident in range(first_id, first_id + count):
        date = rng.choice(venue.open_dates)
        event = date_event[date]
        zone = venue.zones_by_event[event][0]
        code = sign(Claims(KEY_ID, Kind.TICKET, ident, event, date, zone), key)
        out.append(
            CodeLine(code, ident, "ticket", "valid", date, event, zone, True, in_snapshot=False)
        )
    return out


def write_dataset(
    tickets: int,
    out: Path,
    codes: Path,
    *,
    seed: int = 1,
    now: float | None = None,
    processes: int | None = None,
    extra: int | None = None,
) -> dict[str, Any]:
    """Write the snapshot, CODES.jsonl and gates.json; return the figures."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    key = private_key_for(seed)
    pub = public_bytes(key)
    venue = build_venue(now, pub)
    extra = max(10, min(2000, tickets // 500)) if extra is None else extra
    # The CPUs this process may use now: a benchmark that pinned itself to one gets one
    # worker, not a pool crowded onto that CPU.
    processes = processes or len(os.sched_getaffinity(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    codes.parent.mkdir(parents=True, exist_ok=True)
    header = Header(VENUE, 0, now, tickets)
    bounds = [(s, min(s + CHUNK, tickets + 1)) for s in range(1, tickets + 1, CHUNK)]
    decoder = msgspec.msgpack.Decoder(list[Record])
    key_raw = key.private_bytes_raw()
    ctx = multiprocessing.get_context("fork")
    tmp_out = out.with_name(out.name + ".part")
    with (
        ctx.Pool(processes, _init_worker, (key_raw, now, seed)) as pool,
        open(tmp_out, "wb") as snap,
        open(codes, "wb") as codes_file,
    ):

        def records() -> Iterator[Record]:
            # At most 2 chunks per worker in flight, consumed in order.
            pending: deque[Any] = deque()
            todo = iter(bounds)
            for b in todo:
                pending.append(pool.apply_async(_chunk_job, (b,)))
                if len(pending) >= 2 * processes:
                    break
            done = 0
            while pending:
                raw, lines = pending.popleft().get(timeout=600)
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.apply_async(_chunk_job, (nxt,)))
                codes_file.write(lines)
                done += 1
                if done % 20 == 0:
                    note(f"dataset: {done * CHUNK} / {tickets} records")
                yield from decoder.decode(raw)

        write_snapshot(snap, header, venue.catalog, records())
        for line in extra_codes(tickets + 1, extra, venue, key, seed):
            codes_file.write(msgspec.json.encode(line) + b"\n")
    os.replace(tmp_out, out)
    gates_path = out.parent / "gates.json"
    gates_path.write_bytes(msgspec.json.format(msgspec.json.encode(gate_profiles(venue))))
    elapsed = time.perf_counter() - started
    return {
        "tickets": tickets,
        "extra_codes": extra,
        "open_dates": list(venue.open_dates),
        "now": now,
        "processes": processes,
        "elapsed_s": round(elapsed, 2),
        "records_per_s": round(tickets / elapsed) if elapsed else 0,
        "snapshot_bytes": out.stat().st_size,
        "snapshot": str(out),
        "codes": str(codes),
        "gates": str(gates_path),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, required=True, help="records in the snapshot")
    parser.add_argument("--out", type=Path, required=True, help="snapshot file to write")
    parser.add_argument("--codes", type=Path, required=True, help="CODES.jsonl to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--now", type=float, default=None, help="POSIX time (default: now)")
    parser.add_argument("--processes", type=int, default=None, help="default: every core")
    parser.add_argument(
        "--extra", type=int, default=None, help="signed codes left out of the snapshot"
    )


def main(args: argparse.Namespace) -> int:
    if args.tickets < 1:
        raise SystemExit("--tickets must be at least 1")
    figures = write_dataset(
        args.tickets,
        args.out,
        args.codes,
        seed=args.seed,
        now=args.now,
        processes=args.processes,
        extra=args.extra,
    )
    print(f"dataset: {args.tickets} records in {figures['elapsed_s']} s")
    emit(figures)
    return 0
