"""A venue's snapshot, read from the database in batches, in the ``sync.snapshot`` format.

The whole file comes from one read transaction on a connection of its own, so its
records are consistent with ``Header.cursor`` (the venue's change sequence at that
moment) and no write waits for it (WAL). ``open_snapshot`` reads the header first (an
unknown venue fails before any byte) and returns a plain generator of the bytes;
``core.api`` drives it on a dedicated thread, several frames per hop.

The bytes are a function of the venue's state at ``Header.cursor``: ``created_at`` is
the time of that change (of the venue's creation for cursor 0), not the time of the
download, so two downloads at one cursor are identical and one SHA-256 per (venue,
cursor) authenticates them. ``SnapshotDigests`` keeps the digests of the snapshots
served lately, for the signed ``snapshot-digest`` answer.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Final

from core import feed
from core.store import Tx, open_reader
from sync.snapshot import Header, Record, iter_snapshot_chunks

FETCH_ROWS: Final = 5000
DIGESTS_KEPT: Final = 256
"""Snapshot digests kept in memory (oldest dropped first)."""
DIGEST_TTL_S: Final = 600.0
"""How long a snapshot's digest stays available after its download."""


class SnapshotStream:
    """One venue's snapshot in a read transaction: ``header`` first, then its bytes by
    iteration. ``close`` releases the connection, whether or not it was read."""

    __slots__ = ("_chunks", "_conn", "header")

    def __init__(self, db_path: Path, venue: str) -> None:
        """Read the header; raises ``NotFound`` for an unknown venue."""
        conn = open_reader(db_path)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN")
            tx = Tx(conn)
            venue_id = feed.venue_id(tx, venue)
            cursor = feed.cursor(tx, venue_id)
            self.header = Header(
                venue=venue,
                cursor=cursor,
                created_at=feed.changed_at(tx, venue_id, cursor),
                tag=feed.change_tag(tx, venue_id, cursor),
                records=int(
                    tx.scalar("SELECT COUNT(*) FROM tickets WHERE venue_id = ?", (venue_id,))
                ),
            )
            catalog = feed.catalog(tx, venue_id)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._chunks = iter_snapshot_chunks(self.header, catalog, _records(conn, venue_id))

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._conn.close()


def snapshot_chunks(db_path: Path, venue: str) -> Generator[bytes, None, None]:
    """Yield the snapshot of *venue*; raises ``NotFound`` before the first byte."""
    stream = SnapshotStream(db_path, venue)
    try:
        yield from stream
    finally:
        stream.close()


class SnapshotDigests:
    """SHA-256 of the snapshots served lately, by (venue, cursor); bounded and aging.

    Filled when a download has streamed its last byte (before the end of the response),
    so a node that read a whole snapshot finds its digest. Entries older than
    ``ttl_s`` or beyond ``capacity`` (oldest first) are dropped; a node that asks for a
    dropped one gets a 404 and downloads again. Memory only: a restart forgets them.
    """

    __slots__ = ("_entries", "capacity", "ttl_s")

    def __init__(self, capacity: int = DIGESTS_KEPT, ttl_s: float = DIGEST_TTL_S) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, int], tuple[str, float]] = OrderedDict()

    def put(self, venue: str, cursor: int, sha256: str, now: float) -> None:
        key = (venue, cursor)
        self._entries.pop(key, None)
        self._entries[key] = (sha256, now)
        self._expire(now)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, venue: str, cursor: int, now: float) -> str | None:
        self._expire(now)
        found = self._entries.get((venue, cursor))
        return None if found is None else found[0]

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            _key, (_digest, at) = next(iter(self._entries.items()))
            if now - at <= self.ttl_s:
                break
            self._entries.popitem(last=False)


def _records(conn: sqlite3.Connection, venue_id: int) -> Iterator[Record]:
    cur = conn.cursor()
    cur.row_factory = None
    cur.arraysize = FETCH_ROWS
    cur.execute(
        f"SELECT {feed.RECORD_COLUMNS} FROM tickets WHERE venue_id = ? ORDER BY id",
        (venue_id,),
    )
    record_of = feed.record_of
    while rows := cur.fetchmany():
        for row in rows:
            yield record_of(row)
