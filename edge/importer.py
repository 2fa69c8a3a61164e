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

from edge.index import CURSOR_TAG_KEY, U64, Index, encoder
from sync.codes import code_digest
from sync.snapshot import SnapshotReader

REPLACED_DBS = ("records", "codes", "media")
DIGEST_BYTES = 16


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
    with index.env.begin(write=True) as txn:
        return import_into(txn, index, source)


def import_into(txn: Any, index: Index, source: IO[bytes]) -> ImportReport:
    """Replace records and catalogue inside the caller's write transaction."""
    reader = SnapshotReader(source)
    encode = encoder.encode
    for name in REPLACED_DBS:
        txn.drop(index.db[name], delete=False)
    records_cur = txn.cursor(index.records)
    media_cur = txn.cursor(index.media)
    pack = U64.pack
    # Code digests are random: inserting them as they come costs a B-tree descent
    # each. Collected (24 bytes each), sorted once and appended, they cost a third.
    codes: list[bytes] = []
    last_id = -1
    for batch in reader.batches():
        rec_items = [(pack(r.id), encode(r)) for r in batch]
        codes.extend([r.code_digest + k for r, (k, _) in zip(batch, rec_items, strict=True)])
        ascending = bool(batch) and batch[0].id > last_id and all(
            rec_items[i][0] < rec_items[i + 1][0] for i in range(len(rec_items) - 1)
        )
        records_cur.putmulti(rec_items, append=ascending)
        if batch:
            last_id = batch[-1].id
        media_items = [
            (code_digest(uid), pack(r.id)) for r in batch if r.media for uid in r.media
        ]
        if media_items:
            media_cur.putmulti(media_items)
    codes.sort()
    txn.cursor(index.codes).putmulti(
        ((c[:DIGEST_BYTES], c[DIGEST_BYTES:]) for c in codes), append=True
    )
    del codes
    txn.put(b"catalog", encode(reader.catalog), db=index.meta)
    txn.put(b"cursor", encode(reader.header.cursor), db=index.meta)
    txn.put(CURSOR_TAG_KEY, encode((reader.header.cursor, reader.header.tag)), db=index.meta)
    txn.put(b"venue", encode(reader.header.venue), db=index.meta)
    return ImportReport(reader.count, 0.0, reader.header.cursor, reader.header.venue)


def import_file(data_dir: Path, snapshot: Path, **index_kwargs: Any) -> ImportReport:
    # writemap: the import is one big transaction written straight into the map,
    # without LMDB first copying every dirty page; still fsynced at commit.
    index_kwargs.setdefault("writemap", True)
    index = Index(data_dir, **index_kwargs)
    try:
        with snapshot.open("rb") as fh:
            return import_snapshot(index, fh)
    finally:
        index.close()
