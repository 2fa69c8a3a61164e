"""The change feed: a monotonic sequence per venue, and what each step changed.

A write that matters at a gate calls ``record_changed`` (a ticket or pass row),
``catalog_changed`` (events, dates, zones, pass products, keys) or ``scan_admitted`` (a
node's accepted scan, for the venue's other nodes) inside its own transaction, so the
sequence number and the change commit together or not at all. The feed stores only
*which* record, catalogue or scan changed; ``load_changes`` reads their current state,
so an edge always converges on the latest one. Record and catalogue changes collapse to
the last one per record in a batch; every scan is its own change.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from core.errors import NotFound
from sync.codes import Kind
from sync.rules import Direction, Mode, Reason
from sync.snapshot import (
    Catalog,
    Channel,
    Date,
    Event,
    PassProduct,
    PublicKey,
    Record,
    Status,
    Zone,
)
from sync.wire import (
    CatalogChanged,
    Change,
    ChangeBatch,
    RecordChanged,
    Resync,
    ScanAdmitted,
    ScanItem,
)

if TYPE_CHECKING:
    from core.store import Tx

_T = TypeVar("_T")

MAX_CHANGES_PER_BATCH: Final = 2000
_IN_CHUNK: Final = 500

RECORD_COLUMNS: Final = (
    "id, kind, status, event_id, date_id, zone_id, digest, channel, sold,"
    " order_number, holder, media, dates"
)
_KINDS: Final = (Kind.TICKET, Kind.PASS)
_STATUSES: Final = (Status.VALID, Status.CANCELLED, Status.UNPAID)
_CHANNELS: Final = (Channel.ONLINE, Channel.BOX_OFFICE, Channel.RESELLER)
_NO_STRINGS: tuple[str, ...] = ()
_NO_INTS: tuple[int, ...] = ()


def record_of(row: Sequence[Any]) -> Record:
    """Build an edge record from a row of ``RECORD_COLUMNS``."""
    media = row[11]
    dates = row[12]
    return Record(
        row[0],
        _KINDS[row[1]],
        _STATUSES[row[2]],
        row[3],
        row[4],
        row[5],
        row[6],
        _CHANNELS[row[7]],
        row[8] == 1,
        row[9],
        row[10],
        tuple(media.split(",")) if media else _NO_STRINGS,
        tuple(map(int, dates.split(","))) if dates else _NO_INTS,
    )


def venue_id(tx: Tx, name: str) -> int:
    found = tx.scalar("SELECT id FROM venues WHERE name = ?", (name,))
    if found is None:
        raise NotFound("venue_not_found", f"no venue {name!r}")
    return int(found)


def ensure_venue(tx: Tx, name: str, timezone: str = "UTC") -> int:
    found = tx.scalar("SELECT id FROM venues WHERE name = ?", (name,))
    if found is not None:
        return int(found)
    new_id = tx.next_id("venues")
    tx.exec(
        "INSERT INTO venues (id, name, timezone, seq, created_at) VALUES (?, ?, ?, 0, ?)",
        (new_id, name, timezone, time.time()),
    )
    return new_id


def record_changed(tx: Tx, venue: int, ticket_id: int) -> int:
    return _append(tx, venue, "record", ticket_id)


def scan_admitted(tx: Tx, venue: int, ticket_id: int, scan_id: str) -> int:
    """Announce a stored, accepted scan of *ticket_id* to the venue's nodes."""
    return _append(tx, venue, "scan", ticket_id, scan_id)


def catalog_changed(tx: Tx, venue: int) -> int:
    return _append(tx, venue, "catalog", 0)


def catalog_changed_everywhere(tx: Tx) -> None:
    for row in tx.all("SELECT id FROM venues"):
        catalog_changed(tx, int(row["id"]))


def cursor(tx: Tx, venue: int) -> int:
    return int(tx.scalar("SELECT seq FROM venues WHERE id = ?", (venue,)) or 0)


def catalog(tx: Tx, venue: int) -> Catalog:
    """The venue's full catalogue, as the edge needs it."""
    name = tx.scalar("SELECT name FROM venues WHERE id = ?", (venue,))
    events = [
        Event(r["id"], r["name"], name)
        for r in tx.all("SELECT id, name FROM events WHERE venue_id = ? ORDER BY id", (venue,))
    ]
    dates = [
        Date(r["id"], r["event_id"], r["starts_at"], r["ends_at"], r["doors_open"], r["day"])
        for r in tx.all(
            "SELECT d.id, d.event_id, d.starts_at, d.ends_at, d.doors_open, d.day FROM dates d"
            " JOIN events e ON e.id = d.event_id WHERE e.venue_id = ? ORDER BY d.id",
            (venue,),
        )
    ]
    zones = [
        Zone(r["id"], r["event_id"], r["name"], r["capacity"])
        for r in tx.all(
            "SELECT z.id, z.event_id, z.name, z.capacity FROM zones z"
            " JOIN events e ON e.id = z.event_id WHERE e.venue_id = ? ORDER BY z.id",
            (venue,),
        )
    ]
    products = []
    for r in tx.all("SELECT * FROM pass_products WHERE venue_id = ? ORDER BY id", (venue,)):
        events_of = tuple(
            int(e["event_id"])
            for e in tx.all(
                "SELECT event_id FROM pass_product_events WHERE product_id = ? ORDER BY event_id",
                (r["id"],),
            )
        )
        products.append(
            PassProduct(
                r["id"],
                r["name"],
                events_of,
                bool(r["choice"]),
                r["max_entries"],
                bool(r["per_event"]),
                bool(r["per_day"]),
                bool(r["one_day"]),
            )
        )
    return Catalog(name or "", events, dates, zones, products, public_keys(tx))


def public_keys(tx: Tx) -> list[PublicKey]:
    return [
        PublicKey(int(r["id"]), bytes(r["public"]), r["revoked_at"] is not None)
        for r in tx.all("SELECT id, public, revoked_at FROM keys ORDER BY id")
    ]


def records(tx: Tx, ids: Sequence[int]) -> dict[int, Record]:
    found: dict[int, Record] = {}
    for chunk in _chunks(ids, _IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        for row in tx.conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM tickets WHERE id IN ({marks})",
            chunk,
        ):
            found[row[0]] = record_of(row)
    return found


def load_changes(tx: Tx, venue: int, after: int, limit: int = MAX_CHANGES_PER_BATCH) -> ChangeBatch:
    """Changes after *after* in sequence order: each record and the catalogue in their
    current state, and each admitted scan as uploaded."""
    head = cursor(tx, venue)
    if after > head:
        return ChangeBatch(
            head, [Resync(head, "cursor ahead of the core; take a snapshot")], head=head
        )
    after_tag = change_tag(tx, venue, after)
    rows = tx.all(
        "SELECT seq, kind, ref, at, scan_id FROM changes WHERE venue_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (venue, after, limit),
    )
    if not rows:
        return ChangeBatch(after, head=head, tag=after_tag, after_tag=after_tag)
    last = int(rows[-1]["seq"])
    tag = _tag(venue, rows[-1])
    # Keep only the last change per record (and per catalogue): earlier ones are stale.
    # Scans are never stale: each one is kept, under its own sequence number.
    latest: dict[tuple[str, int], int] = {}
    scan_ids: dict[int, str] = {}
    for row in rows:
        if row["kind"] == "scan":
            scan_ids[int(row["seq"])] = str(row["scan_id"])
        else:
            latest[(row["kind"], int(row["ref"]))] = int(row["seq"])
    wanted = [ref for (kind, ref) in latest if kind == "record"]
    found = records(tx, wanted)
    scans = _scans(tx, venue, list(scan_ids.values()))
    entries: list[tuple[int, str, int]] = [(seq, kind, ref) for (kind, ref), seq in latest.items()]
    entries.extend((seq, "scan", 0) for seq in scan_ids)
    entries.sort()
    changes: list[Change] = []
    venue_catalog: Catalog | None = None
    for seq, kind, ref in entries:
        if kind == "catalog":
            if venue_catalog is None:
                venue_catalog = catalog(tx, venue)
            changes.append(CatalogChanged(seq, venue_catalog))
        elif kind == "scan":
            admitted = scans.get(scan_ids[seq])
            if admitted is not None:
                changes.append(ScanAdmitted(seq, admitted[0], admitted[1]))
        elif ref in found:
            changes.append(RecordChanged(seq, found[ref]))
    return ChangeBatch(last, changes, more=last < head, head=head, tag=tag, after_tag=after_tag)


def load_admissions(
    tx: Tx, venue: int, after: int, upto: int, limit: int = MAX_CHANGES_PER_BATCH
) -> ChangeBatch:
    """Only the admitted scans with ``after < seq <= upto``, in sequence order.

    A node that bootstraps from a snapshot at cursor C has every record as of C but
    none of the venue's scan state: it replays these admissions (up to C) so a ticket
    admitted elsewhere before it joined is not admitted again."""
    upto = min(upto, cursor(tx, venue))
    rows = tx.all(
        "SELECT seq, scan_id FROM changes WHERE venue_id = ? AND kind = 'scan'"
        " AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        (venue, after, upto, limit),
    )
    if not rows:
        return ChangeBatch(max(after, upto), head=upto)
    scans = _scans(tx, venue, [str(r["scan_id"]) for r in rows])
    changes: list[Change] = []
    for row in rows:
        admitted = scans.get(str(row["scan_id"]))
        if admitted is not None:
            changes.append(ScanAdmitted(int(row["seq"]), admitted[0], admitted[1]))
    full = len(rows) >= limit
    last = int(rows[-1]["seq"]) if full else upto
    return ChangeBatch(last, changes, more=full, head=upto)


SCAN_COLUMNS: Final = (
    "scan_id, node, ticket_id, result, reason, direction, gate, mode, date_id,"
    " scanned_at, logged_at, offline"
)


def scan_of(row: Sequence[Any]) -> ScanItem:
    """A node's scan from a row of ``SCAN_COLUMNS``."""
    return ScanItem(
        scan_id=row[0],
        ticket=row[2],
        result=row[3],
        reason=Reason(row[4]),
        direction=Direction(row[5]),
        gate=row[6],
        mode=Mode(row[7]),
        date=row[8],
        scanned_at=row[9],
        logged_at=row[10],
        offline=bool(row[11]),
    )


def _scans(tx: Tx, venue: int, scan_ids: Sequence[str]) -> dict[str, tuple[str, ScanItem]]:
    found: dict[str, tuple[str, ScanItem]] = {}
    for chunk in _chunks(scan_ids, _IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        for row in tx.conn.execute(
            f"SELECT {SCAN_COLUMNS} FROM scans WHERE venue_id = ? AND scan_id IN ({marks})",
            (venue, *chunk),
        ):
            found[row[0]] = (row[1], scan_of(row))
    return found


def _append(tx: Tx, venue: int, kind: str, ref: int, scan_id: str | None = None) -> int:
    seq = int(tx.scalar("UPDATE venues SET seq = seq + 1 WHERE id = ? RETURNING seq", (venue,)))
    tx.exec(
        "INSERT INTO changes (venue_id, seq, kind, ref, at, scan_id) VALUES (?, ?, ?, ?, ?, ?)",
        (venue, seq, kind, ref, time.time(), scan_id),
    )
    return seq


def change_tag(tx: Tx, venue: int, seq: int) -> str:
    """The tag of change *seq* (``sync.wire``: which history a cursor is in); "" for 0."""
    if not seq:
        return ""
    row = tx.one(
        "SELECT seq, kind, ref, at, scan_id FROM changes WHERE venue_id = ? AND seq = ?",
        (venue, seq),
    )
    return _tag(venue, row) if row is not None else ""


def _tag(venue: int, row: Any) -> str:
    """A digest of what a change was and when (``at`` to the microsecond and beyond):
    the same row of a backup gives the same tag, a change made after a restore under
    the same seq another one."""
    what = f"{venue}|{row['seq']}|{row['kind']}|{row['ref']}|{float(row['at'])!r}|{row['scan_id']}"
    return hashlib.blake2b(what.encode(), digest_size=8).hexdigest()


def changed_at(tx: Tx, venue: int, seq: int) -> float:
    """When change *seq* of *venue* was made (the venue's creation for 0)."""
    if seq:
        at = tx.scalar("SELECT at FROM changes WHERE venue_id = ? AND seq = ?", (venue, seq))
        if at is not None:
            return float(at)
    return float(tx.scalar("SELECT created_at FROM venues WHERE id = ?", (venue,)) or 0.0)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Notifier:
    """Wakes long-polling change requests after a write (in this process)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.parked = 0
        """Long polls waiting for a write right now (for status and tests)."""

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next_write(self) -> asyncio.Event:
        """An event set by the next write."""
        return self._event

    async def wait(self, woken: asyncio.Event, timeout_s: float) -> bool:
        """Wait for *woken* (from ``next_write``) at most *timeout_s*; True if it was set."""
        self.parked += 1
        try:
            async with asyncio.timeout(timeout_s):
                await woken.wait()
        except TimeoutError:
            return False
        finally:
            self.parked -= 1
        return True
