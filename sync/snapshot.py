"""Validity records and the streamed snapshot file that carries them from core to edge.

Disk and wire records are ``array_like`` msgspec Structs: they may only gain fields at
the end, with defaults, so an older node reads a newer snapshot and the other way round.

Snapshot file::

    MAGIC (8 bytes) then frames: u32 big-endian length + msgpack(Frame)

Frames, in order: one ``Header``, one ``Catalog``, any number of ``Records``
(batches of at most ``RECORDS_PER_FRAME``), one ``End``. A file without ``End`` is
truncated and is refused whole. ``read_snapshot`` and ``write_snapshot`` stream: memory
stays bounded by one frame whatever the record count.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import IO, Final

import msgspec

from sync.codes import Kind

MAGIC: Final = b"GKSNAP1\n"
FRAME_LEN: Final = struct.Struct(">I")
RECORDS_PER_FRAME: Final = 5000
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024


class Status(IntEnum):
    VALID = 0
    CANCELLED = 1
    UNPAID = 2


class Channel(IntEnum):
    ONLINE = 0
    BOX_OFFICE = 1
    RESELLER = 2


class Record(msgspec.Struct, frozen=True, array_like=True):
    """What a gate needs to know about one ticket or pass."""

    id: int
    kind: Kind
    status: Status
    event: int
    """Event id for a ticket; pass product id for a pass."""
    date: int
    """Date id for a ticket; 0 for a pass."""
    zone: int
    """Zone id; 0 admits to any zone."""
    code_digest: bytes
    """``sync.codes.code_digest`` of the ticket's code (signed or plain)."""
    channel: Channel = Channel.ONLINE
    sold: bool = True
    """False for printed stock not sold yet (quick-cancellable)."""
    order: str = ""
    holder: str = ""
    media: tuple[str, ...] = ()
    """Media ids (RFID card UIDs) that open the gate for this record."""
    dates: tuple[int, ...] = ()
    """Pass only: explicit dates chosen by the buyer (event-choice passes)."""


class Event(msgspec.Struct, frozen=True, array_like=True):
    id: int
    name: str
    venue: str = ""


class Date(msgspec.Struct, frozen=True, array_like=True):
    """One representation of an event. Times are POSIX seconds (UTC)."""

    id: int
    event: int
    start: float
    end: float
    doors_open: float
    day: int = 0
    """Local calendar day (proleptic ordinal) for per-day pass limits; 0 = from start."""


class Zone(msgspec.Struct, frozen=True, array_like=True):
    id: int
    event: int
    name: str
    capacity: int = 0


class PassProduct(msgspec.Struct, frozen=True, array_like=True):
    """Which dates a pass admits to, and its limits. 0 means no limit."""

    id: int
    name: str
    events: tuple[int, ...] = ()
    choice: bool = False
    """Event-choice pass: admits only the record's chosen ``dates``."""
    max_entries: int = 0
    """Total distinct dates the pass may be used on (e.g. 10 shows in a season)."""
    per_event: bool = False
    """At most one date per event."""
    per_day: bool = False
    """At most one event per calendar day."""
    one_day: bool = False
    """All entries on one single day (chosen by the first entry), across sites."""


class PublicKey(msgspec.Struct, frozen=True, array_like=True):
    id: int
    public: bytes
    revoked: bool = False


class Catalog(msgspec.Struct, frozen=True, tag="catalog"):
    venue: str = ""
    events: list[Event] = []
    dates: list[Date] = []
    zones: list[Zone] = []
    products: list[PassProduct] = []
    keys: list[PublicKey] = []


class Header(msgspec.Struct, frozen=True, tag="header"):
    venue: str
    cursor: int = 0
    """Change-feed position this snapshot is consistent with."""
    created_at: float = 0.0
    records: int = 0
    tag: str = ""
    """The tag of change ``cursor`` (``sync.wire``): which history the snapshot is of."""


class Records(msgspec.Struct, frozen=True, tag="records"):
    items: list[Record]


class End(msgspec.Struct, frozen=True, tag="end"):
    records: int


Frame = Header | Catalog | Records | End

_encoder = msgspec.msgpack.Encoder()
_frame_decoder: msgspec.msgpack.Decoder[Header | Catalog | Records | End] = msgspec.msgpack.Decoder(
    Frame
)


class SnapshotError(Exception):
    """The snapshot file is not one we can read (bad magic, truncated, corrupt)."""


def encode_frame(frame: Header | Catalog | Records | End) -> bytes:
    body = _encoder.encode(frame)
    return FRAME_LEN.pack(len(body)) + body


def iter_snapshot_chunks(
    header: Header, catalog: Catalog, records: Iterable[Record]
) -> Iterator[bytes]:
    """Yield the snapshot's bytes in pieces, streaming records in frames."""
    yield MAGIC
    yield encode_frame(header)
    yield encode_frame(catalog)
    batch: list[Record] = []
    count = 0
    for record in records:
        batch.append(record)
        if len(batch) >= RECORDS_PER_FRAME:
            yield encode_frame(Records(batch))
            count += len(batch)
            batch = []
    if batch:
        yield encode_frame(Records(batch))
        count += len(batch)
    yield encode_frame(End(count))


def write_snapshot(
    out: IO[bytes], header: Header, catalog: Catalog, records: Iterable[Record]
) -> int:
    """Write a snapshot; return the number of records written."""
    count = 0
    for chunk in iter_snapshot_chunks(header, catalog, records):
        out.write(chunk)
        count += 1
    return count


class SnapshotReader:
    """Streams frames from a snapshot file. ``header`` and ``catalog`` are read first."""

    def __init__(self, source: IO[bytes]) -> None:
        self._src = source
        if source.read(len(MAGIC)) != MAGIC:
            raise SnapshotError("not a snapshot file (bad magic)")
        header = self._next()
        catalog = self._next()
        if not isinstance(header, Header) or not isinstance(catalog, Catalog):
            raise SnapshotError("snapshot must start with a header and a catalog")
        self.header: Header = header
        self.catalog: Catalog = catalog
        self.count = 0

    def _next(self) -> Header | Catalog | Records | End:
        raw_len = self._src.read(FRAME_LEN.size)
        if len(raw_len) != FRAME_LEN.size:
            raise SnapshotError("snapshot truncated (no end frame)")
        (length,) = FRAME_LEN.unpack(raw_len)
        if length > MAX_FRAME_BYTES:
            raise SnapshotError(f"snapshot frame too large ({length} bytes)")
        body = self._src.read(length)
        if len(body) != length:
            raise SnapshotError("snapshot truncated inside a frame")
        try:
            return _frame_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"snapshot frame corrupt: {exc}") from exc

    def batches(self) -> Iterator[list[Record]]:
        """Yield record batches; raises ``SnapshotError`` at the end if truncated."""
        while True:
            frame = self._next()
            if isinstance(frame, Records):
                self.count += len(frame.items)
                yield frame.items
            elif isinstance(frame, End):
                if frame.records != self.count:
                    raise SnapshotError(
                        f"snapshot end says {frame.records} records, read {self.count}"
                    )
                return
            else:
                raise SnapshotError(f"unexpected frame {type(frame).__name__}")
