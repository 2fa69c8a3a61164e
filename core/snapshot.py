"""A venue's snapshot, read from the database in batches, in the ``sync.snapshot`` format.

The whole file comes from one read transaction on a connection of its own, so its
records are consistent with ``Header.cursor`` (the venue's change sequence at that
moment) and no write waits for it (WAL). ``snapshot_chunks`` is a plain generator;
``core.api`` drives it on a dedicated thread, several frames per hop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Final

from core import feed
from core.store import Tx, open_reader
from sync.snapshot import Header, Record, iter_snapshot_chunks

FETCH_ROWS: Final = 5000


def snapshot_chunks(db_path: Path, venue: str) -> Generator[bytes, None, None]:
    """Yield the snapshot of *venue*; raises ``NotFound`` before the first byte."""
    conn = open_reader(db_path)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")
        tx = Tx(conn)
        venue_id = feed.venue_id(tx, venue)
        header = Header(
            venue=venue,
            cursor=feed.cursor(tx, venue_id),
            created_at=time.time(),
            records=int(tx.scalar("SELECT COUNT(*) FROM tickets WHERE venue_id = ?", (venue_id,))),
        )
        catalog = feed.catalog(tx, venue_id)
        yield from iter_snapshot_chunks(header, catalog, _records(conn, venue_id))
        conn.execute("COMMIT")
    finally:
        conn.close()


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
