"""The change feed: a monotonic sequence per venue, and what each step changed.

A write that matters at a gate calls ``record_changed`` (a ticket or pass row) or
``catalog_changed`` (events, dates, zones, pass products, keys) inside its own
transaction, so the sequence number and the change commit together or not at all.
The feed stores only *which* record or catalog changed; ``load_changes`` reads their
current state, so an edge always converges on the latest one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from core.errors import NotFound
from sync.codes import Kind
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
from sync.wire import CatalogChanged, Change, ChangeBatch, RecordChanged, Resync

if TYPE_CHECKING:
    from core.store import Tx

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
    """Changes after *after*, with each record and the catalogue in their current state."""
    head = cursor(tx, venue)
    if after > head:
        return ChangeBatch(head, [Resync(head, "cursor ahead of the core; take a snapshot")])
    rows = tx.all(
        "SELECT seq, kind, ref FROM changes WHERE venue_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (venue, after, limit),
    )
    if not rows:
        return ChangeBatch(after)
    last = int(rows[-1]["seq"])
    # Keep only the last change per record (and per catalogue): earlier ones are stale.
    latest: dict[tuple[str, int], int] = {}
    for row in rows:
        latest[(row["kind"], int(row["ref"]))] = int(row["seq"])
    ordered = sorted(latest.items(), key=lambda item: item[1])
    wanted = [ref for (kind, ref), _seq in ordered if kind == "record"]
    found = records(tx, wanted)
    changes: list[Change] = []
    for (kind, ref), seq in ordered:
        if kind == "catalog":
            changes.append(CatalogChanged(seq, catalog(tx, venue)))
        elif ref in found:
            changes.append(RecordChanged(seq, found[ref]))
    return ChangeBatch(last, changes, more=last < head)


def _append(tx: Tx, venue: int, kind: str, ref: int) -> int:
    seq = int(tx.scalar("UPDATE venues SET seq = seq + 1 WHERE id = ? RETURNING seq", (venue,)))
    tx.exec(
        "INSERT INTO changes (venue_id, seq, kind, ref, at) VALUES (?, ?, ?, ?, ?)",
        (venue, seq, kind, ref, time.time()),
    )
    return seq


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Notifier:
    """Wakes long-polling change requests after a write (in this process)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next_write(self) -> asyncio.Event:
        """An event set by the next write."""
        return self._event
