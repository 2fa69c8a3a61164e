"""The node's LMDB environment: validity index, scan state, scan log, answers, metadata.

Named databases (keys are big-endian so LMDB's byte order is numeric order):

=========  =======================  ===========================================
db         key                      value
=========  =======================  ===========================================
records    id u64                   msgpack ``sync.snapshot.Record``
codes      code digest (16 bytes)   id u64 (signed and plain codes)
media      media digest (16 bytes)  id u64 (RFID card UIDs)
state      id u64                   msgpack ``sync.rules.ScanState``
scanlog    seq u64                  msgpack ``edge.scanlog.LogEntry`` (the sync outbox)
answers    scan_id (utf-8)          msgpack ``edge.scanlog.StoredAnswer``
search     token 0x00 id u64        empty (order numbers and holder name words)
meta       ascii key                msgpack (catalog, gates, cursor, node id, ...)
=========  =======================  ===========================================

Reads happen on the event loop thread in short read transactions that never span an
``await``; every write goes through the single writer thread of
``edge.scanlog.GroupCommitter`` (or the offline importer, which runs alone). The map
grows by doubling when it fills (``grow``), which LMDB allows only while this process
has no transaction open: the writer asks the loop thread to do it between scans.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Final

import lmdb
import msgspec

from sync.rules import EMPTY_STATE, ScanState
from sync.snapshot import Catalog, Record

U64: Final = struct.Struct(">Q")
DEFAULT_MAP_BYTES: Final = 1 << 30
MAX_DBS: Final = 16
DB_NAMES: Final = ("records", "codes", "media", "state", "scanlog", "answers", "search", "meta")

record_decoder: Final = msgspec.msgpack.Decoder(Record)
state_decoder: Final = msgspec.msgpack.Decoder(ScanState)
catalog_decoder: Final = msgspec.msgpack.Decoder(Catalog)
encoder: Final = msgspec.msgpack.Encoder()


def u64(n: int) -> bytes:
    return U64.pack(n)


def search_tokens(record: Record) -> set[str]:
    """Lower-case words a technician may search a record by."""
    tokens = {word.lower() for word in record.holder.split() if len(word) >= 2}
    if record.order:
        tokens.add(record.order.lower())
    return tokens


class Index:
    """Owns the LMDB environment and its named databases."""

    def __init__(self, path: Path, *, map_bytes: int = DEFAULT_MAP_BYTES, sync: bool = True):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        data_file = path / "data.mdb"
        existing = data_file.stat().st_size if data_file.exists() else 0
        self.env = lmdb.Environment(
            str(path),
            map_size=max(map_bytes, existing * 2),
            max_dbs=MAX_DBS,
            sync=sync,
            metasync=sync,
            readahead=False,
            max_spare_txns=4,
        )
        self.db: dict[str, Any] = {
            name: self.env.open_db(name.encode(), create=True) for name in DB_NAMES
        }
        self.records = self.db["records"]
        self.codes = self.db["codes"]
        self.media = self.db["media"]
        self.state = self.db["state"]
        self.scanlog = self.db["scanlog"]
        self.answers = self.db["answers"]
        self.search = self.db["search"]
        self.meta = self.db["meta"]

    def close(self) -> None:
        self.env.close()

    def grow(self) -> int:
        """Double the map. Call only while this process holds no transaction."""
        new_size = int(self.env.info()["map_size"]) * 2
        self.env.set_mapsize(new_size)
        return new_size

    # -- reads (short transactions, loop thread) ------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        with self.env.begin(db=self.meta) as txn:
            value: bytes | None = txn.get(key.encode())
            return value

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        raw_prefix = prefix.encode()
        out: list[tuple[str, bytes]] = []
        with self.env.begin(db=self.meta) as txn:
            cursor = txn.cursor()
            if cursor.set_range(raw_prefix):
                for key, value in cursor:
                    if not key.startswith(raw_prefix):
                        break
                    out.append((key.decode(), value))
        return out

    def catalog(self) -> Catalog:
        raw = self.get_meta("catalog")
        return catalog_decoder.decode(raw) if raw else Catalog()

    def record(self, ident: int) -> Record | None:
        with self.env.begin(db=self.records) as txn:
            raw = txn.get(u64(ident))
        return record_decoder.decode(raw) if raw else None

    def state_of(self, ident: int) -> ScanState:
        with self.env.begin(db=self.state) as txn:
            raw = txn.get(u64(ident))
        return state_decoder.decode(raw) if raw else EMPTY_STATE

    def counts(self) -> dict[str, int]:
        with self.env.begin() as txn:
            return {name: int(txn.stat(self.db[name])["entries"]) for name in DB_NAMES}

    def last_key(self, db: Any) -> int:
        with self.env.begin(db=db) as txn:
            cursor = txn.cursor()
            if cursor.last():
                (value,) = U64.unpack(cursor.key())
                return int(value)
        return 0

    def search_ids(self, token: str, limit: int) -> list[int]:
        prefix = token.encode()
        ids: list[int] = []
        with self.env.begin(db=self.search) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix) or len(ids) >= limit:
                        break
                    ids.append(U64.unpack(key[-8:])[0])
        return ids

    def mapped_bytes(self) -> int:
        """Resident bytes of this process that are LMDB's mapped pages."""
        target = str((self.path / "data.mdb").resolve())
        total = 0
        inside = False
        try:
            with open(f"/proc/{os.getpid()}/smaps", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line[0].isdigit() or line[0] in "abcdef":
                        inside = line.rstrip().endswith(target)
                    elif inside and line.startswith("Rss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            return 0
        return total


def rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
