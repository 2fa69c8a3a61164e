"""sync.snapshot: streamed write/read round trip; truncated or corrupt files refused."""

from __future__ import annotations

import io

import msgspec
import pytest

from sync.codes import Kind, code_digest
from sync.snapshot import (
    FRAME_LEN,
    MAGIC,
    RECORDS_PER_FRAME,
    Catalog,
    Channel,
    Date,
    End,
    Event,
    Header,
    PassProduct,
    PublicKey,
    Record,
    Records,
    SnapshotError,
    SnapshotReader,
    Status,
    Zone,
    encode_frame,
    write_snapshot,
)

CATALOG = Catalog(
    venue="Arena",
    events=[Event(1, "Concert", "Arena")],
    dates=[Date(10, 1, 1000.0, 2000.0, 900.0, 7)],
    zones=[Zone(100, 1, "Floor", 500)],
    products=[PassProduct(500, "Season", (1,), max_entries=3, per_day=True)],
    keys=[PublicKey(1, b"k" * 32), PublicKey(2, b"r" * 32, revoked=True)],
)


def records(n: int) -> list[Record]:
    return [
        Record(i, Kind(i % 2), Status(i % 3), 1, 10 if i % 2 == 0 else 0, 100,
               code_digest(f"code-{i}"), Channel(i % 3), bool(i % 4), f"ORD-{i}",
               f"Holder {i}", (f"CARD-{i}",) if i % 5 == 0 else (), (10,) if i % 2 else ())
        for i in range(1, n + 1)
    ]


def snapshot(items: list[Record], cursor: int = 9) -> bytes:
    out = io.BytesIO()
    write_snapshot(out, Header("Arena", cursor, 123.0, len(items)), CATALOG, items)
    return out.getvalue()


def read_all(data: bytes) -> tuple[SnapshotReader, list[Record]]:
    reader = SnapshotReader(io.BytesIO(data))
    got = [r for batch in reader.batches() for r in batch]
    return reader, got


@pytest.mark.parametrize("n", [0, 1, 7, RECORDS_PER_FRAME, RECORDS_PER_FRAME + 1])
def test_round_trip(n):
    items = records(n)
    reader, got = read_all(snapshot(items))
    assert reader.header == Header("Arena", 9, 123.0, n)
    assert reader.catalog == CATALOG
    assert got == items
    assert reader.count == n


def test_every_truncation_is_refused():
    data = snapshot(records(12))
    for cut in range(len(data)):
        with pytest.raises(SnapshotError):
            read_all(data[:cut])


def test_large_snapshot_truncated_between_frames():
    data = snapshot(records(RECORDS_PER_FRAME + 3))
    # Drop exactly the End frame: every record frame is intact, the end is missing.
    end = encode_frame(End(RECORDS_PER_FRAME + 3))
    assert data.endswith(end)
    with pytest.raises(SnapshotError):
        read_all(data[: -len(end)])


def test_bad_magic_and_garbage():
    data = snapshot(records(2))
    for bad in (b"", b"GKSNAP2\n" + data[8:], b"\x00" * 64, b"not a snapshot at all"):
        with pytest.raises(SnapshotError):
            read_all(bad)


def test_corrupt_frame_is_refused():
    data = bytearray(snapshot(records(3)))
    header_len = FRAME_LEN.unpack(data[8:12])[0]
    data[12 : 12 + header_len] = b"\xc1" * header_len  # msgpack "never used" byte
    with pytest.raises(SnapshotError):
        read_all(bytes(data))


def test_frame_length_over_the_cap():
    with pytest.raises(SnapshotError):
        read_all(MAGIC + FRAME_LEN.pack(2**32 - 1) + b"x" * 16)


def test_frames_out_of_order_and_wrong_end_count():
    enc = msgspec.msgpack.Encoder()

    def frame(obj) -> bytes:
        body = enc.encode(obj)
        return FRAME_LEN.pack(len(body)) + body

    header, catalog = Header("Arena"), CATALOG
    items = records(2)
    with pytest.raises(SnapshotError):
        read_all(MAGIC + frame(catalog) + frame(header) + frame(End(0)))
    with pytest.raises(SnapshotError):
        read_all(MAGIC + frame(header) + frame(catalog) + frame(Records(items)) + frame(End(3)))
    with pytest.raises(SnapshotError):
        read_all(MAGIC + frame(header) + frame(catalog) + frame(header) + frame(End(0)))
    reader, got = read_all(MAGIC + frame(header) + frame(catalog) + frame(Records(items))
                           + frame(End(2)))
    assert got == items and reader.count == 2
