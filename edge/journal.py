"""The scan journal: a write-ahead ring file that makes scans durable with one flush.

An LMDB commit flushes twice (its data pages, then its meta page), and a commit of scans
dirties pages all over the file (each ticket's state page, the log's and the answers'
last pages, the branch pages above them): on the reference VM a commit of 1 to 9 scans
cost 230-370 us of CPU and 0.6-0.9 ms, where appending the same rows to a file and
flushing it once cost 110-120 us and 0.25-0.3 ms (``python -m bench commit``,
``bench/RESULTS.md``). So the group
committer appends each group of scans here as one record and answers once it is
flushed; its applier thread copies the rows into LMDB in larger, fully synced
transactions a few times a second, and stores in ``meta`` (key ``journal``) how far
the journal is applied. A node that stops (or is killed) with rows not applied yet
applies them at its next start (``GroupCommitter._open_journal``), before deciding
anything.

File layout: a header block (``FILE_HEAD``: magic, epoch, capacity), then a ring of
records up to the capacity. A record is ``RECORD_HEAD`` (magic, crc32, payload length,
epoch, first seq, row count) and its payload (msgpack list of ``JournalRow`` arrays). A record
with no rows is a wrap mark: the next record is at the ring's start. Reading from the
applied position, a record counts only if its magic, epoch and crc are right and its
first seq is the one expected next: what follows the last good record (a torn write, a
previous lap's records, zeros) ends the journal. The epoch is drawn when the file is
made and kept in ``meta`` with the position: a journal and an index that do not belong
together are never mixed.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import secrets
import struct
import threading
import zlib
from pathlib import Path
from typing import Final

import msgspec

log = logging.getLogger(__name__)

FILE_NAME: Final = "journal"
FILE_MAGIC: Final = b"GKJF"
RECORD_MAGIC: Final = b"GKJR"
FILE_HEAD: Final = struct.Struct(">4sQQ")
"""magic, epoch, capacity."""
RING_START: Final = 4096
RECORD_HEAD: Final = struct.Struct(">4sIIQQI")
"""magic, crc32 of everything after it (rest of the head and payload), payload length,
epoch, first seq, row count."""
_CRC_FROM: Final = 8
DEFAULT_BYTES: Final = 16 << 20
"""About 64,000 scans: many seconds of a full node's scans, while the applier needs to
be at most a fraction of a second behind."""
MIN_BYTES: Final = 64 << 10
MAX_RECORD_BYTES: Final = 8 << 20
_ZEROS: Final = bytes(1 << 20)


JournalRow = tuple[bytes, bytes, bytes, int, bytes | None]
"""One scan as the applier writes it: (scan_id, the msgpack ``edge.scanlog.LogEntry``
stored under its seq, the remembered answer, the ticket id, its new state or None)."""


class Position(msgspec.Struct, frozen=True, array_like=True):
    """How far the index has the journal (``meta`` key ``journal``)."""

    epoch: int
    offset: int
    """Where the first record not applied yet is (or will be) written."""
    seq: int
    """The last scan log seq in the index."""


class JournalFull(Exception):
    """The ring holds no room for a record until the applier catches up."""


_rows_encoder: Final = msgspec.msgpack.Encoder()
_rows_decoder: Final = msgspec.msgpack.Decoder(list[JournalRow])
position_decoder: Final = msgspec.msgpack.Decoder(Position)


def frame(epoch: int, first_seq: int, rows: list[JournalRow]) -> bytes:
    """A record: its head and payload (no rows: a wrap mark)."""
    payload = _rows_encoder.encode(rows) if rows else b""
    rest = RECORD_HEAD.pack(RECORD_MAGIC, 0, len(payload), epoch, first_seq, len(rows))
    crc = zlib.crc32(payload, zlib.crc32(rest[_CRC_FROM:]))
    return RECORD_HEAD.pack(RECORD_MAGIC, crc, len(payload), epoch, first_seq,
                            len(rows)) + payload


def read_records(
    buf: bytes | bytearray | mmap.mmap, epoch: int, offset: int, seq: int
) -> tuple[list[tuple[int, list[JournalRow]]], int, int]:
    """The records of a ring image *buf* from *offset*, the first one starting at seq
    *seq* + 1; returns ([(first seq, rows)], the offset after the last, its last seq).
    Stops quietly at the first thing that is not the expected next record. No I/O of
    its own (*buf* may be a read-only map of the file: only the records are copied)."""
    out: list[tuple[int, list[JournalRow]]] = []
    capacity = len(buf)
    wrapped = False
    while True:
        if capacity - offset < RECORD_HEAD.size:
            if wrapped:
                break
            offset, wrapped = RING_START, True
            continue
        magic, crc, length, rec_epoch, first, count = RECORD_HEAD.unpack(
            buf[offset: offset + RECORD_HEAD.size])
        end = offset + RECORD_HEAD.size + length
        if (magic != RECORD_MAGIC or rec_epoch != epoch or first != seq + 1
                or end > capacity or length > MAX_RECORD_BYTES):
            break
        rest = buf[offset + _CRC_FROM: end]
        if zlib.crc32(rest) != crc:
            break
        if count == 0:  # wrap mark
            if wrapped:
                break
            offset, wrapped = RING_START, True
            continue
        try:
            rows = _rows_decoder.decode(buf[offset + RECORD_HEAD.size: end])
        except (msgspec.DecodeError, msgspec.ValidationError):
            break
        if len(rows) != count:
            break
        out.append((first, rows))
        seq = first + count - 1
        offset = end
        wrapped = False
    return out, offset, seq


class Journal:
    """The journal file, appended by the group committer's writer thread only.

    Room is accounted in bytes: each append adds what it took (with the end of the ring
    it skipped, on a wrap) to ``unapplied_bytes``; the applier gives it back with
    ``release`` once the index holds those rows. An append never overwrites what is
    not applied yet.
    """

    def __init__(self, path: Path, fd: int, epoch: int, capacity: int, offset: int,
                 *, sync: bool = True) -> None:
        self.path = path
        self._fd = fd
        self.epoch = epoch
        self.capacity = capacity
        self.offset = offset
        self.sync = sync
        self.unapplied_bytes = 0
        """Bytes appended and not applied yet (``room_for``); under ``_room``."""
        self._room = threading.Condition()
        self.bytes_written = 0

    @classmethod
    def create(cls, folder: Path, capacity: int, offset_seq: int, *, sync: bool = True
               ) -> tuple[Journal, Position]:
        """A new, zero-filled journal file (replacing any), and its start position."""
        capacity = max(MIN_BYTES, capacity)
        path = folder / FILE_NAME
        tmp = folder / (FILE_NAME + ".new")
        epoch = secrets.randbits(63)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, FILE_HEAD.pack(FILE_MAGIC, epoch, capacity).ljust(RING_START,
                                                                             b"\0"), 0)
            at = RING_START
            while at < capacity:  # zeros: no extent to allocate on the flush path later
                at += os.pwrite(fd, _ZEROS[: min(len(_ZEROS), capacity - at)], at)
            os.fsync(fd)
            os.replace(tmp, path)
            _fsync_dir(folder)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, fd, epoch, capacity, RING_START, sync=sync), Position(
            epoch, RING_START, offset_seq)

    @staticmethod
    def never_written(folder: Path) -> bool:
        """True if *folder* holds a journal file with no record in it: one made by a
        start that stopped before the index had its position (nothing can be lost)."""
        try:
            with (folder / FILE_NAME).open("rb") as fh:
                head = fh.read(RING_START + RECORD_HEAD.size)
        except OSError:
            return False
        return (len(head) == RING_START + RECORD_HEAD.size and head.startswith(FILE_MAGIC)
                and not any(head[RING_START:]))

    @classmethod
    def open_existing(cls, folder: Path, position: Position, *, sync: bool = True
                      ) -> tuple[Journal, list[tuple[int, list[JournalRow]]], Position] | None:
        """The journal file the index's *position* belongs to, and what it holds past
        that position; None if there is no such file (missing, another epoch, damaged
        head)."""
        path = folder / FILE_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, FILE_HEAD.size, 0)
            if len(head) < FILE_HEAD.size:
                os.close(fd)
                return None
            magic, epoch, capacity = FILE_HEAD.unpack(head)
            if (magic != FILE_MAGIC or epoch != position.epoch or size < capacity
                    or capacity < MIN_BYTES or not RING_START <= position.offset <= capacity):
                os.close(fd)
                return None
            with mmap.mmap(fd, capacity, access=mmap.ACCESS_READ) as ring:
                records, offset, seq = read_records(ring, epoch, position.offset,
                                                    position.seq)
        except BaseException:
            os.close(fd)
            raise
        journal = cls(path, fd, epoch, capacity, offset, sync=sync)
        return journal, records, Position(epoch, offset, seq)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def room_for(self, record: bytes) -> int:
        """Bytes an append of *record* would take (with a skipped ring end), or raise
        ``JournalFull``."""
        need = len(record)
        if self.offset + need > self.capacity:
            need += self.capacity - self.offset  # the ring's end is skipped
        if self.unapplied_bytes + need > self.capacity - RING_START:
            raise JournalFull(
                f"journal full: {self.unapplied_bytes} bytes not applied to the index yet"
            )
        return need

    def wait_for_room(self, record: bytes, timeout_s: float) -> None:
        """Wait up to *timeout_s* for the applier to make room for *record*."""
        with self._room:
            self._room.wait_for(lambda: self.fits(record), timeout_s)

    def fits(self, record: bytes) -> bool:
        try:
            self.room_for(record)
        except JournalFull:
            return False
        return True

    def _scrub(self, heads: list[int]) -> None:
        """After a failed append: zero the heads it may have written (never past the
        ring's end: the file keeps its size). Its scans were
        refused (503); were the record to reach the disk anyway (a flush that failed
        once may succeed later), a restart after a kill would count them. Best effort:
        if the disk refuses this too, the next append at the same place writes over it."""
        for at in heads:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, bytes(RECORD_HEAD.size), at)
        if self.sync:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)

    def release(self, took: int) -> None:
        """The applier has stored records that took *took* bytes: their room is free."""
        with self._room:
            self.unapplied_bytes -= took
            self._room.notify_all()

    def append(self, first_seq: int, record: bytes) -> tuple[int, int]:
        """Write *record* (from ``frame``) and flush; returns (bytes it took, the offset
        after it). On an error nothing moves: the next append writes over it, and what
        this one wrote is scrubbed (``_scrub``)."""
        with self._room:
            took = self.room_for(record)
        at = self.offset
        heads: list[int] = []
        try:
            if at + len(record) > self.capacity:
                if self.capacity - at >= RECORD_HEAD.size:
                    heads.append(at)
                    _write_all(self._fd, frame(self.epoch, first_seq, []), at)
                at = RING_START
            heads.append(at)
            _write_all(self._fd, record, at)
            if self.sync:
                os.fdatasync(self._fd)
        except OSError:
            self._scrub(heads)
            raise
        self.offset = at + len(record)
        with self._room:
            self.unapplied_bytes += took
        self.bytes_written += len(record)
        return took, self.offset


def _write_all(fd: int, data: bytes, at: int) -> None:
    written = os.pwrite(fd, data, at)
    if written != len(data):
        raise OSError(f"short write to the journal: {written} of {len(data)} bytes")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
