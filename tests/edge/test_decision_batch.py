"""Scans that arrive in one loop round are decided as one batch, in arrival order, and
committed together: each must still get exactly the answer it would get alone."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import edge.scan
from edge.index import u64
from edge.model import ScanRequest
from edge.scan import ScanService, UnknownGate
from edge.scanlog import CommitFailed, GroupCommitter, StoredAnswer
from tests.e2e.procs import eventually
from tests.edge.inprocess import scan_service
from tests.venue import Venue


@pytest.fixture
async def service(tmp_path: Path, venue: Venue) -> AsyncIterator[ScanService]:
    venue.add_ticket("a")
    venue.add_ticket("b")
    async with scan_service(tmp_path, venue) as svc:
        yield svc


async def test_one_round_mixed_batch(service: ScanService, venue: Venue) -> None:
    a, b = venue.codes["a"], venue.codes["b"]
    commits_before = service.committer.commits
    reqs = [
        ScanRequest("1", a, "main"),
        ScanRequest("1", a, "main"),  # a retry inside the same round
        ScanRequest("2", a, "main"),  # the same ticket again, another scanner
        ScanRequest("3", "NOT-A-CODE", "main"),
        ScanRequest("4", b, "main"),
    ]
    tasks = [asyncio.create_task(service.scan(r)) for r in reqs]
    unknown_gate = asyncio.create_task(service.scan(ScanRequest("5", b, "nowhere")))
    answers = await asyncio.gather(*tasks)
    with pytest.raises(UnknownGate):
        await unknown_gate
    assert [x.reason for x in answers] == ["ok", "ok", "already_used", "unknown", "ok"]
    assert answers[0] == answers[1]
    assert service.committer.commits == commits_before + 1  # one write for the round
    await service.committer.flush()  # journaled: now in the index itself
    assert service.index.state_of(venue.ids["a"]).entries == 1
    assert service.counters.scans == 4  # the retry is not counted twice
    assert not service.pending_state and not service.pending_answers
    # Remembered after the commit too: the retry gets the first answer, not already_used.
    assert await service.scan(ScanRequest("1", a, "main")) == answers[0]


async def test_a_failing_scan_fails_alone(
    service: ScanService, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug deciding one scan (simulated: nothing a client sends reaches it) answers that
    scan with an error and leaves the rest of its round decided and stored."""
    a, b = venue.codes["a"], venue.codes["b"]
    real = edge.scan.decide
    bad_id = venue.ids["b"]

    def decide(record, *args):  # type: ignore[no-untyped-def]
        if record.id == bad_id:
            raise RuntimeError("bug")
        return real(record, *args)

    monkeypatch.setattr(edge.scan, "decide", decide)
    good = asyncio.create_task(service.scan(ScanRequest("g", a, "main")))
    bad = asyncio.create_task(service.scan(ScanRequest("b", b, "main")))
    assert (await good).reason == "ok"
    with pytest.raises(RuntimeError):
        await bad
    assert not service.pending_state and not service.pending_answers
    monkeypatch.setattr(edge.scan, "decide", real)
    # Nothing was stored for the failed scan: its retry is decided afresh.
    assert (await service.scan(ScanRequest("b", b, "main"))).reason == "ok"


async def test_failed_scan_does_not_keep_a_read_transaction(
    service: ScanService, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan that fails while being decided (here: an undecodable state entry, e.g. one
    left by another version) frees the batch's read transaction with its request. Kept
    with its traceback, the error would hold the deciding frame and its transaction in a
    reference cycle until the cyclic GC ran: 126 such scans between two collections
    would fill LMDB's reader table and fail every scan of the node (found in review)."""
    # pytest's log capture keeps each record's exc_info (and so the frames); production
    # logging does not. Keep it out of the measurement.
    monkeypatch.setattr(logging.getLogger("edge.scan"), "disabled", True)
    index = service.index
    with index.env.begin(write=True) as txn:
        txn.put(u64(venue.ids["b"]), b"\xc1", db=index.state)
    gc.collect()
    gc.disable()  # the cyclic collector has not run yet: deterministic
    try:
        for i in range(130):
            with pytest.raises(msgspec.DecodeError):
                await service.scan(ScanRequest(f"bad{i}", venue.codes["b"], "main"))
        readers = len(index.env.readers().splitlines()) - 1
        assert readers <= 5, f"{readers} LMDB reader slots held after the requests ended"
        answer = await service.scan(ScanRequest("good", venue.codes["a"], "main"))
        assert answer.reason == "ok"
    finally:
        gc.enable()
        gc.collect()


async def test_undecodable_remembered_answer_fails_only_its_scan(
    service: ScanService, venue: Venue
) -> None:
    """A remembered answer that no longer decodes (e.g. a Reason renamed by an upgrade)
    fails its own scan only, not every scan of its loop round (found in review)."""
    index = service.index
    with index.env.begin(write=True) as txn:
        txn.put(b"old", b"\xc1", db=index.answers)
    old = asyncio.create_task(service.scan(ScanRequest("old", venue.codes["b"], "main")))
    good = asyncio.create_task(service.scan(ScanRequest("good", venue.codes["a"], "main")))
    await asyncio.wait([old, good])
    assert isinstance(old.exception(), msgspec.DecodeError | msgspec.ValidationError)
    assert good.result().reason == "ok"


@dataclass
class FailingCommit:
    broken: asyncio.Future[None]
    """The failing write's own future."""
    first: asyncio.Task[StoredAnswer]
    """Scan 1, in the same transaction."""
    release: threading.Event
    """Set it to let the transaction fail."""


async def fail_next_commit_with(service: ScanService, code: str) -> FailingCommit:
    """Scan 1 (scan_id "1") of *code* decided and put in a transaction with a write that
    raises an I/O error (the disk, simulated), the writer held inside that write until
    ``release`` is set: whatever is decided meanwhile waits behind the failure."""
    committer = service.committer
    in_slow, release_first, in_failing, release_failing = (threading.Event() for _ in range(4))

    def slow(txn: Any, _c: GroupCommitter) -> None:
        in_slow.set()
        release_first.wait(5)

    def failing(txn: Any, _c: GroupCommitter) -> None:
        in_failing.set()
        release_failing.wait(5)
        raise OSError(5, "Input/output error")

    busy = committer.submit(slow)
    await eventually(in_slow.is_set, 5)  # the writer holds ``slow``: what follows waits
    broken = committer.submit(failing)
    first = asyncio.create_task(service.scan(ScanRequest("1", code, "main")))
    await eventually(lambda: bool(service.pending_state), 5)
    release_first.set()
    await busy
    await eventually(in_failing.is_set, 5)  # the writer is in ``failing`` + scan 1: one txn
    return FailingCommit(broken, first, release_failing)


async def test_a_scan_decided_on_a_failed_commit_is_not_stored(
    service: ScanService, venue: Venue
) -> None:
    """Scan 1 of a ticket is decided, then its commit fails (the disk, simulated by a
    write that fails in the same transaction). Scan 2 of the ticket, decided meanwhile
    on scan 1's reservation, says ``already_used``: stored, the ticket would refuse its
    holder though nobody entered. It must fail too (503, the device retries), and its
    retry admit."""
    a = venue.codes["a"]
    failure = await fail_next_commit_with(service, a)
    broken, first, release_failing = failure.broken, failure.first, failure.release
    second = asyncio.create_task(service.scan(ScanRequest("2", a, "main")))
    await eventually(lambda: b"2" in service.pending_answers, 5)
    assert service.pending_answers[b"2"][1].reason == "already_used"  # decided on scan 1
    release_failing.set()
    for fut in (broken, first, second):
        with pytest.raises(CommitFailed):
            await fut
    assert not service.pending_state and not service.pending_answers
    retried = await service.scan(ScanRequest("2", a, "main"))
    assert retried.reason == "ok"
    await service.committer.flush()
    assert service.index.state_of(venue.ids["a"]).entries == 1


async def test_scans_decided_once_a_commit_failed_never_see_doomed_reservations(
    service: ScanService, venue: Venue
) -> None:
    """Scan 1 (ticket a) is in a commit that fails; scan 2 (ticket b, first entry) was
    decided meanwhile and waits behind it, so the writer fails it unwritten. From the
    moment the failure reaches the loop, a decision must see b as never admitted. Before
    (found in review), scan 2's reservation stayed until its own failure came back: a
    scan of b decided in between answered ``already_used`` and was stored, refusing a
    holder nobody had let in."""
    a, b = venue.codes["a"], venue.codes["b"]
    failure = await fail_next_commit_with(service, a)
    broken, first, release_failing = failure.broken, failure.first, failure.release
    second = asyncio.create_task(service.scan(ScanRequest("2", b, "main")))
    await eventually(lambda: b"2" in service.pending_answers, 5)

    seen: dict[str, Any] = {}
    third: list[asyncio.Task[Any]] = []

    def on_failure(_fut: asyncio.Future[None]) -> None:
        # The first callback of the failure: what a scan decided now would read.
        with service.env.begin() as txn:
            seen["b"] = service.state_in(txn, venue.ids["b"]).entries
            seen["a"] = service.state_in(txn, venue.ids["a"]).entries
        seen["retry_waits"] = b"2" in service.pending_answers
        # And such a scan: b's holder at another gate, right now.
        third.append(asyncio.create_task(service.scan(ScanRequest("3", b, "main"))))

    broken.add_done_callback(on_failure)
    release_failing.set()
    for fut in (broken, first, second):
        with pytest.raises(CommitFailed):
            await fut
    assert seen == {"a": 0, "b": 0, "retry_waits": False}
    # Scan 3 was decided on the index alone, admitted, and stored; scan 2 never was.
    assert (await third[0]).reason == "ok"
    assert (await service.scan(ScanRequest("2", b, "main"))).reason == "already_used"
    assert (await service.scan(ScanRequest("3", b, "main"))).reason == "ok"  # remembered
    assert (await service.scan(ScanRequest("1", a, "main"))).reason == "ok"
    await service.committer.flush()
    assert service.index.state_of(venue.ids["b"]).entries == 1
    assert not service.pending_state and not service.pending_answers


async def test_a_batch_retrying_a_scan_whose_commit_fails_decides_nothing(
    service: ScanService, venue: Venue
) -> None:
    """A batch retries scan 1 (in flight) naming a gate with no profile, with a new scan
    of b. Scan 1's commit then fails: the batch must fail whole (503, the device retries
    it) with nothing of it stored. Review found a 404 after b was admitted and stored
    when the failure landed between the batch's gate check and its decisions; this test
    does not force that interleaving (it passes on the old code too): it holds the
    outcome, for a batch whose unknown-gate scans are now resolved before any decision."""
    a, b = venue.codes["a"], venue.codes["b"]
    failure = await fail_next_commit_with(service, a)
    batch = asyncio.create_task(service.scan_batch(
        [ScanRequest("1", a, "nowhere"), ScanRequest("9", b, "main")]))
    await asyncio.sleep(0.05)  # the batch is waiting for scan 1's commit
    assert not batch.done()
    failure.release.set()
    for fut in (failure.broken, failure.first, batch):
        with pytest.raises(CommitFailed):
            await fut
    assert service.state_of(venue.ids["b"]).entries == 0
    assert not service.pending_state and not service.pending_answers
    # Retried: scan 1 was never answered, so the unknown gate refuses the whole batch.
    with pytest.raises(UnknownGate):
        await service.scan_batch([ScanRequest("1", a, "nowhere"), ScanRequest("9", b, "main")])
    assert service.state_of(venue.ids["b"]).entries == 0
