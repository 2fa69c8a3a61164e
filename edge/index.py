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
meta       ascii key                msgpack (catalog, gates, cursor, node id, ...)
           qc_before:<seq u64>      a quick-cancelled record before the cancel
           replay                   admissions still to load after a snapshot import
           quarantine:<seq u64>     an unreadable scan log entry, as it was
           journal                  how far the scan journal is stored here
=========  =======================  ===========================================

Scans reach these dbs through the scan journal (``edge.journal``, the file ``journal``
beside ``data.mdb``), up to ``edge.scanlog.APPLY_INTERVAL_S`` after their answer.

Reads happen on the event loop thread in short read transactions that never span an
``await``; every write goes through the single writer thread of
``edge.scanlog.GroupCommitter`` (or the offline importer, which runs alone). The map
grows by doubling when it fills (``grow``), which LMDB allows only while this process
has no transaction open: the writer asks the loop thread to do it between scans.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any, Final

import lmdb
import msgspec

from sync.rules import EMPTY_STATE, ScanState
from sync.snapshot import Catalog, Record

U64: Final = struct.Struct(">Q")
DEFAULT_MAP_BYTES: Final = 1 << 30
MAX_DBS: Final = 16
DB_NAMES: Final = ("records", "codes", "media", "state", "scanlog", "answers", "meta")
REPLAY_KEY: Final = b"replay"
"""Meta key present from a snapshot import until the admissions the snapshot lacks are
loaded (``edge.follower.Follower.replay_pending``): the scan state is incomplete."""
CURSOR_TAG_KEY: Final = b"cursor_tag"
"""Meta key: ``[cursor, tag]``, the tag of the change the feed cursor stood at when it
was stored (``sync.wire``: which history the cursor is in)."""
SEARCH_CHUNK: Final = 4096
"""Records examined per read transaction by ``search_chunk``."""

WARM_CHUNK_BYTES: Final = 1 << 20
WARM_SHARE_OF_AVAILABLE: Final = 0.5
"""``Warmer`` reads at most this share of the memory the kernel reports available."""
WARM_STOP_TIMEOUT_S: Final = 1.0
"""Longest the loop waits for the reading thread at stop (it is a daemon thread)."""

log = logging.getLogger(__name__)

_DOTTED_I: Final = "\u0130".encode()
_KELVIN: Final = "\u212a".encode()

record_decoder: Final = msgspec.msgpack.Decoder(Record)
state_decoder: Final = msgspec.msgpack.Decoder(ScanState)
catalog_decoder: Final = msgspec.msgpack.Decoder(Catalog)
encoder: Final = msgspec.msgpack.Encoder()


def u64(n: int) -> bytes:
    return U64.pack(n)


class Index:
    """Owns the LMDB environment and its named databases."""

    def __init__(
        self,
        path: Path,
        *,
        map_bytes: int = DEFAULT_MAP_BYTES,
        sync: bool = True,
        writemap: bool = False,
    ):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sync = sync
        """Commits flush to disk (off only for diagnostics: not durable)."""
        data_file = path / "data.mdb"
        # The file is at least as large as the data; with writemap LMDB also extends it
        # to the whole map. Never map less than the file, never more than asked for
        # beyond it: an ever larger map would make every open (and every msync) costlier.
        existing = data_file.stat().st_size if data_file.exists() else 0
        self.env = lmdb.Environment(
            str(path),
            map_size=max(map_bytes, existing),
            max_dbs=MAX_DBS,
            sync=sync,
            metasync=sync,
            readahead=False,
            writemap=writemap,
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

    def meta_int(self, key: str) -> int:
        """A counter kept in ``meta`` (msgpack int: a feed or upload cursor), 0 if unset."""
        raw = self.get_meta(key)
        return int(msgspec.msgpack.decode(raw)) if raw else 0

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        """``meta_prefixed`` for text keys (gate profiles)."""
        return [(key.decode(), value) for key, value in self.meta_prefixed(prefix.encode())]

    def meta_prefixed(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of ``meta`` whose key starts with *prefix*, in key order
        (keys may be binary: ``qc_before:<seq>``, ``quarantine:<seq>``)."""
        out: list[tuple[bytes, bytes]] = []
        with self.env.begin(db=self.meta) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    out.append((key, value))
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

    def search_chunk(
        self, needles: list[bytes], after: bytes | None
    ) -> tuple[list[Record], bytes | None]:
        """Records whose raw bytes contain every needle (lower-case), in one chunk.

        Search reads the records themselves: a technician's search is rare, and a
        separate search index would cost the import and every update. Returns the
        matches and the key to continue after (None at the end).
        """
        matches: list[Record] = []
        last: bytes | None = None
        with self.env.begin(db=self.records) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(after) if after is not None else cursor.first()
            if not positioned:
                return matches, None
            if after is not None and cursor.key() == after and not cursor.next():
                return matches, None
            for _ in range(SEARCH_CHUNK):
                last = cursor.key()
                value = cursor.value()
                # Bytes lower-case ASCII only; str.lower() also turns the two non-ASCII
                # letters below into ASCII, which the exact check then matches.
                low = value.lower().replace(_DOTTED_I, b"i").replace(_KELVIN, b"k")
                if all(n in low for n in needles):
                    matches.append(record_decoder.decode(value))
                if not cursor.next():
                    return matches, None
        return matches, last

    def used_bytes(self) -> int:
        """Bytes of the data file LMDB has used (the rest of the map is a sparse hole)."""
        return (int(self.env.info()["last_pgno"]) + 1) * int(self.env.stat()["psize"])

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


class Warmer:
    """Reads the index file once, in a thread, so that its pages are in the page cache.

    After a reboot (a power cut at the venue) the page cache is empty. The env is opened
    without readahead (``readahead=False``: random access must not read whole extents),
    so every scan would then wait for the disk on each B-tree page it touches: on the
    reference VM a cold lookup cost 150-165 us of wall time and 90 us of CPU against
    4.5 us warm, and it takes tens of thousands of scans for the pages to come in by
    themselves. One sequential read of the used part of the file (103 MB for 1,000,000
    records: 0.3 s) brings them all in. ``POSIX_FADV_WILLNEED`` would be cheaper, but
    the kernel read only 4-8 MB of it here. The node serves meanwhile; the read never
    takes more than ``WARM_SHARE_OF_AVAILABLE`` of the memory the kernel says is
    available, and stops when the node does.
    """

    def __init__(self, index: Index, *, budget_bytes: int | None = None) -> None:
        self._file = index.path / "data.mdb"
        used = index.used_bytes()
        if budget_bytes is None:
            available = available_memory_bytes()
            if not available:
                log.warning("MemAvailable unknown: the index is not read into the page cache")
            budget_bytes = int(available * WARM_SHARE_OF_AVAILABLE)
        self.target_bytes = min(used, budget_bytes)
        self.read_bytes = 0
        self.seconds = 0.0
        self.done = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="edge-warm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WARM_STOP_TIMEOUT_S)
            self._thread = None

    def run(self) -> None:
        started = time.perf_counter()
        try:
            self._read()
        except OSError as exc:  # a cold cache is slower, not wrong: never fail the node
            log.warning("could not read the index into the page cache: %s", exc)
        finally:
            self.seconds = time.perf_counter() - started
            self.done = True
        log.info("index read into the page cache: %.0f MB in %.2f s",
                 self.read_bytes / 1e6, self.seconds)

    def _read(self) -> None:
        buf = memoryview(bytearray(WARM_CHUNK_BYTES))
        fd = os.open(self._file, os.O_RDONLY)
        try:
            for offset in range(0, self.target_bytes, WARM_CHUNK_BYTES):
                if self._stop.is_set():
                    return
                want = min(WARM_CHUNK_BYTES, self.target_bytes - offset)
                got = os.preadv(fd, [buf[:want]], offset)
                if got <= 0:
                    return
                self.read_bytes += got
        finally:
            os.close(fd)

    def status(self) -> dict[str, object]:
        return {"done": self.done, "read_bytes": self.read_bytes,
                "target_bytes": self.target_bytes, "seconds": round(self.seconds, 3)}


def available_memory_bytes() -> int:
    """``MemAvailable`` of /proc/meminfo, or 0 when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
