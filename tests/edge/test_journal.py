"""The scan journal: its records, its ring, and a node that uses a small one."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from edge.index import Index
from edge.journal import (
    FILE_NAME,
    MIN_BYTES,
    RECORD_HEAD,
    RING_START,
    Journal,
    JournalFull,
    JournalRow,
    Position,
    frame,
    position_decoder,
    read_records,
)
from edge.model import Direction, Result, ScanRequest
from edge.scan import ScanService
from edge.scanlog import (
    JOURNAL_META_KEY,
    CommitFailed,
    GroupCommitter,
    LogEntry,
    log_decoder,
    log_encoder,
)
from tests.edge.inprocess import broken, put_meta, scan_service
from tests.venue import Venue

EPOCH = 77


def rows(first: int, n: int, size: int = 900) -> list[JournalRow]:
    return [(b"sid-%d" % (first + i), b"e" * size, b"a", first + i, b"s" if i % 2 else None)
            for i in range(n)]


def ring(capacity: int, records: list[tuple[int, bytes]]) -> bytearray:
    buf = bytearray(capacity)
    for at, record in records:
        buf[at: at + len(record)] = record
    return buf


def test_records_read_back_in_order_until_the_first_that_does_not_follow() -> None:
    one, two = frame(EPOCH, 1, rows(1, 3)), frame(EPOCH, 4, rows(4, 2))
    stale = frame(EPOCH, 2, rows(2, 1))  # an older lap's record after the tail
    buf = ring(8192, [(RING_START, one), (RING_START + len(one), two),
                      (RING_START + len(one) + len(two), stale)])
    records, end, last = read_records(bytes(buf), EPOCH, RING_START, 0)
    assert [(first, len(r)) for first, r in records] == [(1, 3), (4, 2)]
    assert records[0][1] == rows(1, 3)
    assert (end, last) == (RING_START + len(one) + len(two), 5)
    # From the applied position: only what follows it.
    records, _end, last = read_records(bytes(buf), EPOCH, RING_START + len(one), 3)
    assert [first for first, _r in records] == [4] and last == 5


@pytest.mark.parametrize("damage", ["torn", "crc", "epoch", "zeros"])
def test_a_damaged_or_foreign_record_ends_the_journal(damage: str) -> None:
    one, two = frame(EPOCH, 1, rows(1, 3)), frame(EPOCH, 4, rows(4, 2))
    if damage == "torn":
        two = two[: len(two) - 5]
    elif damage == "crc":
        two = two[:-1] + bytes([two[-1] ^ 1])
    elif damage == "epoch":
        two = frame(EPOCH + 1, 4, rows(4, 2))
    else:
        two = bytes(len(two))
    buf = ring(8192, [(RING_START, one), (RING_START + len(one), two)])
    records, end, last = read_records(bytes(buf), EPOCH, RING_START, 0)
    assert [first for first, _r in records] == [1]
    assert (end, last) == (RING_START + len(one), 3)


def test_reading_follows_a_wrap_mark_and_a_ring_end_too_short_for_a_head() -> None:
    capacity = 8192
    one = frame(EPOCH, 1, rows(1, 2))
    mark = frame(EPOCH, 3, [])
    two = frame(EPOCH, 3, rows(3, 2))
    at = capacity - len(one) - len(mark) - 10
    buf = ring(capacity, [(at, one), (at + len(one), mark), (RING_START, two)])
    records, end, last = read_records(bytes(buf), EPOCH, at, 0)
    assert [first for first, _r in records] == [1, 3] and last == 4
    assert end == RING_START + len(two)
    # Fewer bytes than a head left at the end: the next record is at the start.
    at = capacity - len(one) - (RECORD_HEAD.size - 1)
    buf = ring(capacity, [(at, one), (RING_START, two)])
    records, _end, last = read_records(bytes(buf), EPOCH, at, 0)
    assert [first for first, _r in records] == [1, 3] and last == 4


def test_the_ring_never_overwrites_what_is_not_applied(tmp_path: Path) -> None:
    journal, start = Journal.create(tmp_path, MIN_BYTES, 0)
    try:
        assert start == Position(journal.epoch, RING_START, 0)
        seq, took = 1, []
        with pytest.raises(JournalFull):
            for _ in range(MIN_BYTES // 1000):
                took.append(journal.append(seq, frame(journal.epoch, seq, rows(seq, 20)))[0])
                seq += 20
        record = frame(journal.epoch, seq, rows(seq, 20))
        assert sum(took) <= MIN_BYTES - RING_START < sum(took) + len(record)
        assert journal.unapplied_bytes == sum(took)
        # The applier stores the first three records: there is room again, at the start.
        journal.release(sum(took[:3]))
        end_before = journal.offset
        _took, end = journal.append(seq, record)
        assert end == RING_START + len(record) < end_before  # wrapped
        # A restart that had applied the first three records finds the rest, in order.
        applied = Position(journal.epoch, RING_START + sum(took[:3]), 60)
        opened = Journal.open_existing(tmp_path, applied)
        assert opened is not None
        again, records, position = opened
        again.close()
        firsts = [first for first, _r in records]
        assert firsts == list(range(61, seq + 1, 20))
        assert position == Position(journal.epoch, end, seq + 19)
    finally:
        journal.close()


def one_record(folder: Path) -> tuple[Journal, Position]:
    """A closed journal file in *folder* holding one record (seqs 1-2), its start."""
    journal, start = Journal.create(folder, MIN_BYTES, 0)
    journal.append(1, frame(journal.epoch, 1, rows(1, 2)))
    journal.close()
    return journal, start


def test_a_journal_of_another_index_is_not_read(tmp_path: Path) -> None:
    journal, _start = one_record(tmp_path)
    assert Journal.open_existing(tmp_path, Position(journal.epoch + 1, RING_START, 0)) is None
    (tmp_path / FILE_NAME).unlink()
    assert Journal.open_existing(tmp_path, Position(journal.epoch, RING_START, 0)) is None


async def test_a_small_ring_makes_the_writer_wait_for_the_applier(
    tmp_path: Path, venue: Venue
) -> None:
    """Scans of ~300 bytes each, 20 at a time, into a 64 KiB ring stored every 0.2 s:
    the ring fills and wraps many times, the writer waits for room, and every scan is
    answered once and stored once."""
    codes = [venue.add_ticket(f"t{i}") for i in range(600)]
    async with scan_service(tmp_path, venue, journal_bytes=MIN_BYTES,
                            apply_interval_s=0.2) as service:
        committer = service.committer
        answers = []
        for start in range(0, 600, 20):
            answers += await asyncio.gather(*(
                service.scan(ScanRequest(f"{i}-" + "x" * 100, codes[i], "main"))
                for i in range(start, start + 20)
            ))
        assert {a.reason for a in answers} == {"ok"}
        assert committer.journal is not None
        assert committer.journal.bytes_written > 3 * MIN_BYTES  # it went round the ring
        await committer.flush()
        assert service.index.counts()["scanlog"] == 600
        assert committer.unapplied_scans == 0
        assert not service.unapplied_state and not service.unapplied_answers
        assert all(service.index.state_of(venue.ids[f"t{i}"]).entries == 1
                   for i in range(600))


async def test_a_missing_journal_file_is_replaced_and_the_index_kept(
    tmp_path: Path, venue: Venue
) -> None:
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue) as service:
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
    data = tmp_path / "node"
    (data / FILE_NAME).unlink()
    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop())
    try:
        assert committer.journal is not None and committer.recovered_scans == 0
        assert (data / FILE_NAME).stat().st_size == committer.journal.capacity
        committer.start()
        service = ScanService(index, committer)
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
        assert (await service.scan(ScanRequest("2", code, "main"))).reason == "already_used"
    finally:
        await committer.stop()
        index.close()


async def test_journaled_scans_older_than_the_index_log_are_not_applied(
    tmp_path: Path, venue: Venue
) -> None:
    """A position that says the journal holds seqs the index's log already has (an old
    copy of the data directory put back, say): storing them would put two scans under
    one seq; they are left alone, and the journal is replaced, so that the scans
    journaled from now on are found at the next start (review: they were appended
    behind the old records, where a restart never read)."""
    code, other = venue.add_ticket("t"), venue.add_ticket("u")
    async with scan_service(tmp_path, venue, apply_interval_s=1.0) as service:
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
    data = tmp_path / "node"
    index = Index(data)
    try:
        raw = index.get_meta(JOURNAL_META_KEY.decode())
        assert raw is not None
        old = position_decoder.decode(raw)
        with index.env.begin(write=True, db=index.meta) as txn:  # rewind the position
            txn.put(JOURNAL_META_KEY, log_encoder.encode(Position(old.epoch, RING_START, 0)))
        committer = GroupCommitter(index, asyncio.get_running_loop())
        assert committer.recovered_scans == 0
        assert index.counts()["scanlog"] == 1
        raw = index.get_meta(JOURNAL_META_KEY.decode())
        assert raw is not None
        fresh = position_decoder.decode(raw)
        assert fresh.epoch != old.epoch and (fresh.offset, fresh.seq) == (RING_START, 1)
        # A scan journaled now is found by the next start.
        committer.apply_interval_s = 60.0
        committer.start()
        service = ScanService(index, committer)
        assert (await service.scan(ScanRequest("2", other, "main"))).reason == "ok"
        assert committer.journal is not None
        opened = Journal.open_existing(data, fresh)
        assert opened is not None
        opened[0].close()
        assert [first for first, _rows in opened[1]] == [2]
    finally:
        await committer.stop()
        index.close()


def test_journal_file_is_zero_filled_to_its_capacity(tmp_path: Path) -> None:
    journal, _start = Journal.create(tmp_path, MIN_BYTES, 5)
    try:
        st = os.stat(tmp_path / FILE_NAME)
        assert st.st_size == MIN_BYTES
        assert st.st_blocks * 512 >= MIN_BYTES  # written, not a sparse file
        assert not (tmp_path / (FILE_NAME + ".new")).exists()
    finally:
        journal.close()


async def test_journaled_scans_count_before_the_index_has_them(
    tmp_path: Path, venue: Venue
) -> None:
    """Answered from the journal, stored in the index up to a second later: meanwhile
    the ticket is used, the retry gets its first answer, and a failed commit of another
    write does not make the node forget them."""
    code, other = venue.add_ticket("t"), venue.add_ticket("u")
    async with scan_service(tmp_path, venue, apply_interval_s=1.0) as service:
        ident = venue.ids["t"]
        first = await service.scan(ScanRequest("1", code, "main"))
        assert first.reason == "ok"
        assert service.index.state_of(ident).entries == 0  # not in the index yet
        assert service.state_of(ident).entries == 1
        assert (await service.scan(ScanRequest("2", code, "main"))).reason == "already_used"
        assert await service.scan(ScanRequest("1", code, "main")) == first

        with pytest.raises(CommitFailed):
            await service.committer.submit(broken)
        # The barrier stored the journaled scans before the broken write failed.
        assert service.index.state_of(ident).entries == 1
        third = await service.scan(ScanRequest("3", other, "main"))
        assert third.reason == "ok"  # journaled again, 1 s from the index
        # The disk fills up: the next journal append fails, and with it the scan.
        journal = service.committer.journal
        assert journal is not None
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.dup2(full, journal._fd)
        finally:
            os.close(full)
        with pytest.raises(CommitFailed):
            await service.scan(ScanRequest("4", code, "main"))
        # What was journaled before is still counted, and still remembered.
        assert service.state_of(venue.ids["u"]).entries == 1
        assert service.index.state_of(venue.ids["u"]).entries == 0
        assert await service.scan(ScanRequest("3", other, "main")) == third
        await service.committer.flush()
        assert service.index.state_of(venue.ids["u"]).entries == 1
        assert not service.unapplied_state and not service.unapplied_answers


async def test_a_full_ring_gets_the_applier_to_store_at_once(
    tmp_path: Path, venue: Venue
) -> None:
    """The applier would wait a minute; the writer, out of room, asks it to store now,
    so no scan waits for the room or fails (review: every commit waited 2 s for room
    and then failed while the applier slept through its interval or a back-off)."""
    codes = [venue.add_ticket(f"t{i}") for i in range(400)]
    async with scan_service(tmp_path, venue, journal_bytes=MIN_BYTES,
                            apply_interval_s=60.0) as service:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for start in range(0, 400, 20):
            answers = await asyncio.gather(*(
                service.scan(ScanRequest(f"{i}-" + "x" * 100, codes[i], "main"))
                for i in range(start, start + 20)
            ))
            assert {a.reason for a in answers} == {"ok"}
        assert service.committer.applies > 0
        assert loop.time() - started < 10  # no commit waited out JOURNAL_FULL_WAIT_S twice


async def test_a_lone_wrap_mark_at_the_applied_position_moves_it_to_the_ring_start(
    tmp_path: Path, venue: Venue
) -> None:
    """A power cut kept a wrap mark but not the record after it. The next records go at
    the ring's start: the stored position must say so, or the bytes from the mark to
    the end would be written over unaccounted for, and a later restart would look for
    the journal where it no longer is (review)."""
    venue.add_ticket("t")
    async with scan_service(tmp_path, venue):
        pass
    data = tmp_path / "node"
    index = Index(data)
    try:
        raw = index.get_meta(JOURNAL_META_KEY.decode())
        assert raw is not None
        epoch = position_decoder.decode(raw).epoch
        capacity = (data / FILE_NAME).stat().st_size
        at = capacity - 100
        fd = os.open(data / FILE_NAME, os.O_WRONLY)
        try:
            os.pwrite(fd, frame(epoch, 1, []), at)
        finally:
            os.close(fd)
        with index.env.begin(write=True, db=index.meta) as txn:
            txn.put(JOURNAL_META_KEY, log_encoder.encode(Position(epoch, at, 0)))
        committer = GroupCommitter(index, asyncio.get_running_loop())
        assert committer.journal is not None
        assert committer.journal.offset == RING_START
        raw = index.get_meta(JOURNAL_META_KEY.decode())
        assert raw is not None
        assert position_decoder.decode(raw) == Position(epoch, RING_START, 0)
        await committer.stop()  # never started: closes the journal
    finally:
        index.close()


def test_a_journal_file_longer_than_its_ring_is_still_read(tmp_path: Path) -> None:
    _journal, start = one_record(tmp_path)
    with (tmp_path / FILE_NAME).open("ab") as fh:
        fh.write(bytes(10))
    opened = Journal.open_existing(tmp_path, start)
    assert opened is not None
    opened[0].close()
    assert [first for first, _r in opened[1]] == [1]


async def test_a_journal_whose_making_was_interrupted_is_made_again_quietly(
    tmp_path: Path, venue: Venue, caplog: pytest.LogCaptureFixture
) -> None:
    """A start that stopped between making a new journal file and storing its position
    lost nothing: no warning about lost scans. A journal of another index is warned of."""
    venue.add_ticket("t")
    async with scan_service(tmp_path, venue):
        pass
    data = tmp_path / "node"
    Journal.create(data, MIN_BYTES, 0)[0].close()  # a new file, its position never stored
    index = Index(data)
    try:
        with caplog.at_level(logging.INFO, logger="edge.scanlog"):
            committer = GroupCommitter(index, asyncio.get_running_loop())
            await committer.stop()
        assert "made again" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()
        (tmp_path / "elsewhere").mkdir()
        one_record(tmp_path / "elsewhere")
        os.replace(tmp_path / "elsewhere" / FILE_NAME, data / FILE_NAME)
        with caplog.at_level(logging.INFO, logger="edge.scanlog"):
            committer = GroupCommitter(index, asyncio.get_running_loop())
            await committer.stop()
        assert "does not match the index" in caplog.text
    finally:
        index.close()


async def test_a_scan_id_the_index_cannot_key_is_refused_before_the_journal(
    tmp_path: Path, venue: Venue
) -> None:
    """Journaled, a scan_id longer than an LMDB key would fail every later store and
    every start (review). The API refuses it with a 400; the service refuses it too."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue, apply_interval_s=1.0) as service:
        with pytest.raises(ValueError):
            await service.scan(ScanRequest("\N{GRINNING FACE}" * 128, code, "main"))
        with pytest.raises(ValueError):
            await service.quick_cancel("\N{GRINNING FACE}" * 128, code)
        assert service.committer.journaled_scans == 0
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
        await service.committer.flush()
        assert service.index.state_of(venue.ids["t"]).entries == 1


async def test_scans_logged_never_counts_a_stored_scan_twice(
    tmp_path: Path, venue: Venue
) -> None:
    """``/status`` ``scans.logged`` while the applier stores every millisecond: after
    each round (nothing in flight) it is exactly the scans answered so far. Counting the
    index and the journal's backlog at two moments counted stored rows twice (review:
    171 of 7,419 samples too high)."""
    codes = [venue.add_ticket(f"t{i}") for i in range(1500)]
    async with scan_service(tmp_path, venue, apply_interval_s=0.001) as service:
        committer = service.committer
        answered = 0
        for start in range(0, 1500, 30):
            await asyncio.gather(*(service.scan(ScanRequest(f"s{i}", codes[i], "main"))
                                   for i in range(start, start + 30)))
            answered += 30
            for _ in range(20):
                assert committer.scans_logged() == answered
                await asyncio.sleep(0)


async def test_a_deferred_write_rides_on_the_applier_and_holds_up_no_scan(
    tmp_path: Path, venue: Venue
) -> None:
    """A sync cursor (``submit_deferred``) is stored with the applier's next
    transaction, with the scans journaled meanwhile; no scan waits for it and the
    writer makes no barrier (review: every upload and every echo of the node's own
    admissions from the feed was a synced index transaction, ~240 a second online)."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue, apply_interval_s=0.5) as service:
        committer, index = service.committer, service.index
        applies, barriers = committer.applies, committer.barriers  # the gate was one
        cursor = committer.submit_deferred(put_meta(b"probe", b"1"))
        answer = await service.scan(ScanRequest("1", code, "main"))
        assert answer.reason == "ok"
        assert not cursor.done()  # the scan did not wait for it
        assert index.get_meta("probe") is None
        await cursor
        assert index.get_meta("probe") == b"1"
        assert index.state_of(venue.ids["t"]).entries == 1  # the same transaction
        assert committer.applies == applies + 1
        assert committer.barriers == barriers


@pytest.mark.parametrize("apart", [False, True])
async def test_deferred_writes_are_stored_before_a_later_barrier(
    tmp_path: Path, venue: Venue, apart: bool
) -> None:
    """In the same hand-over as the barrier, or held by the applier when it comes."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue, apply_interval_s=30.0) as service:
        committer, index = service.committer, service.index
        first = committer.submit_deferred(put_meta(b"cursor-x", b"old"))
        if apart:  # the deferred write is with the applier once the scan is answered
            assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
            assert not first.done()
        await committer.submit(put_meta(b"cursor-x", b"new"))  # a barrier
        assert first.done() and first.exception() is None
        assert index.get_meta("cursor-x") == b"new"


async def test_a_deferred_write_cannot_take_a_seq_and_the_scans_are_kept(
    tmp_path: Path, venue: Venue
) -> None:
    """The writer appends scans while the applier runs deferred writes: a deferred
    write that appended to the scan log would share seqs with them. It fails alone."""
    code, other = venue.add_ticket("t"), venue.add_ticket("u")
    async with scan_service(tmp_path, venue, apply_interval_s=0.2) as service:
        committer, index = service.committer, service.index
        entry = LogEntry("x", 0, Result.REJECTED, "unknown", Direction.ENTRY, "main",
                         "single", 0, 0.0, 0.0)

        def appends(txn: Any, c: GroupCommitter) -> None:
            c.append_log(txn, entry)

        bad = committer.submit_deferred(appends)
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
        with pytest.raises(CommitFailed):
            await bad
        assert (await service.scan(ScanRequest("2", other, "main"))).reason == "ok"
        await committer.flush()
        assert index.counts()["scanlog"] == 2
        with index.env.begin(db=index.scanlog) as txn:
            logged = [log_decoder.decode(raw).scan_id for _key, raw in txn.cursor()]
        assert logged == ["1", "2"]


async def test_without_a_journal_a_deferred_write_is_a_plain_commit(
    tmp_path: Path, venue: Venue
) -> None:
    async with scan_service(tmp_path, venue, journal_bytes=0) as service:
        await service.committer.submit_deferred(put_meta(b"probe", b"2"))
        assert service.index.get_meta("probe") == b"2"


async def test_a_failing_deferred_write_fails_alone(tmp_path: Path, venue: Venue) -> None:
    """Held deferred writes share a barrier's transaction: one that fails is left out
    and the barrier's write is stored (review: it failed the barrier, and with it, as a
    failed commit, every scan handed over meanwhile)."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue, apply_interval_s=30.0) as service:
        committer, index = service.committer, service.index

        bad = committer.submit_deferred(broken)
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
        await committer.submit(put_meta(b"probe", b"3"))  # a barrier: stored
        with pytest.raises(CommitFailed):
            await bad
        assert index.get_meta("probe") == b"3"
        assert index.state_of(venue.ids["t"]).entries == 1
        assert (await service.scan(ScanRequest("2", code, "main"))).reason == "already_used"


async def test_a_failing_barrier_does_not_fail_the_deferred_writes_it_carries(
    tmp_path: Path, venue: Venue
) -> None:
    """The other way round (review): a barrier whose write fails takes no held cursor
    write with it."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue, apply_interval_s=30.0) as service:
        committer, index = service.committer, service.index

        cursor = committer.submit_deferred(put_meta(b"probe", b"4"))
        assert (await service.scan(ScanRequest("1", code, "main"))).reason == "ok"
        with pytest.raises(CommitFailed):
            await committer.submit(broken)
        await cursor
        assert index.get_meta("probe") == b"4"
        assert index.state_of(venue.ids["t"]).entries == 1
