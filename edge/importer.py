"""Build or replace the validity index from a snapshot file (``python -m edge import``).

The snapshot streams in frames; each frame's records are written in one pass. The whole
import is one write transaction, so a node never sees half an index: a crash or a
truncated file leaves the previous index as it was. Scan state, the scan log and the
remembered answers are kept, since they record what happened at the gates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lmdb

from edge.index import Index, encoder, search_tokens, u64
from sync.codes import code_digest
from sync.snapshot import SnapshotReader

REPLACED_DBS = ("records", "codes", "media", "search")


@dataclass(frozen=True, slots=True)
class ImportReport:
    records: int
    seconds: float
    cursor: int
    venue: str


def import_snapshot(index: Index, source: IO[bytes]) -> ImportReport:
    """Replace the index's records and catalogue with the snapshot's, atomically."""
    started = time.perf_counter()
    while True:
        try:
            report = _import_once(index, source)
        except lmdb.MapFullError:
            index.grow()
            source.seek(0)
            continue
        return ImportReport(report.records, time.perf_counter() - started, report.cursor,
                            report.venue)


def _import_once(index: Index, source: IO[bytes]) -> ImportReport:
    reader = SnapshotReader(source)
    encode = encoder.encode
    with index.env.begin(write=True) as txn:
        for name in REPLACED_DBS:
            txn.drop(index.db[name], delete=False)
        records_cur = txn.cursor(index.records)
        codes_cur = txn.cursor(index.codes)
        media_cur = txn.cursor(index.media)
        search_cur = txn.cursor(index.search)
        for batch in reader.batches():
            rec_items: list[tuple[bytes, bytes]] = []
            code_items: list[tuple[bytes, bytes]] = []
            media_items: list[tuple[bytes, bytes]] = []
            search_items: list[tuple[bytes, bytes]] = []
            for record in batch:
                key = u64(record.id)
                rec_items.append((key, encode(record)))
                code_items.append((record.code_digest, key))
                for uid in record.media:
                    media_items.append((code_digest(uid), key))
                if record.holder or record.order:
                    for token in search_tokens(record):
                        search_items.append((token.encode() + b"\0" + key, b""))
            records_cur.putmulti(rec_items)
            code_items.sort()
            codes_cur.putmulti(code_items)
            if media_items:
                media_cur.putmulti(media_items)
            if search_items:
                search_items.sort()
                search_cur.putmulti(search_items)
        txn.put(b"catalog", encode(reader.catalog), db=index.meta)
        txn.put(b"cursor", encode(reader.header.cursor), db=index.meta)
        txn.put(b"venue", encode(reader.header.venue), db=index.meta)
    return ImportReport(reader.count, 0.0, reader.header.cursor, reader.header.venue)


def import_file(data_dir: Path, snapshot: Path, **index_kwargs: Any) -> ImportReport:
    index = Index(data_dir, **index_kwargs)
    try:
        with snapshot.open("rb") as fh:
            return import_snapshot(index, fh)
    finally:
        index.close()
