"""The durable scan log and its group committer: the node's only LMDB writers.

Every write to the index goes through ``GroupCommitter``: scans (log entry + new state +
remembered answer), quick cancellations, gate profiles, and later the sync feed. Scans
submitted together become one record of the scan journal (``edge.journal``), flushed
once; any other write, one LMDB transaction, committed (fsync). Only then are the
callers' futures resolved, so an answer never leaves the node before the scan that
produced it is on disk. Concurrent scans share a commit. The applier thread stores
journaled scans in the index shortly after (see ``GroupCommitter``).

If the map is full, the transaction is aborted, the map grows (LMDB allows it only while
no transaction is open in the process: the loop thread does it between its read
transactions), and the same writes are tried again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import lmdb
import msgspec

from edge.index import Index, u64
from edge.journal import (
    DEFAULT_BYTES,
    MAX_RECORD_BYTES,
    MIN_BYTES,
    Journal,
    JournalFull,
    JournalRow,
    Position,
    frame,
    position_decoder,
)
from edge.journal import (
    FILE_NAME as JOURNAL_FILE,
)
from edge.model import Direction, Result, TicketInfo
from sync.rules import Reason

log = logging.getLogger(__name__)

COMMIT_BUCKETS_S: Final = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf"))
"""Upper bounds of the commit-duration histogram (the last catches everything)."""
MAX_BATCH: Final = 4096
"""Most operations merged into one transaction by the writer thread."""
STOP_TIMEOUT_S: Final = 30.0
COMMIT_INTERVAL_S: Final = 0.0
"""Least time between the starts of two commits (a group commit delay; off by default).

A commit's two flushes cost about the same whatever it carries: on the reference VM
~0.3 ms of CPU and ~1 ms of wall time, plus two thread hand-offs. A node at half its
capacity commits back to back, two to four scans each. A few milliseconds of delay
merge more scans per commit and cut the CPU that costs, at the price of that much
latency; measured on the reference VM (``bench/RESULTS.md``), 3 ms halved the commits
but did not raise full-load throughput, so the default stays off. The wait applies only
when the previous commit started less than the interval ago: an idle node still
answers after one commit."""
MAX_COMMIT_INTERVAL_S: Final = 0.05
"""More would make answers under load wait longer than a person notices."""
PACE_BELOW: Final = 0
"""Default of ``GroupCommitter.pace_below``: 0, the interval applies to every commit."""
WRITER_SCHED_BATCH: Final = True
"""Run the writer thread under Linux's ``SCHED_BATCH`` policy (see ``GroupCommitter``)."""
APPLY_INTERVAL_S: Final = 0.05
"""Longest a journaled scan waits for the applier to copy it into the index."""
APPLY_MAX_ROWS: Final = 8192
"""The applier copies at once when this many scans wait."""
APPLY_RETRY_S: Final = 1.0
"""First wait after the applier failed to store rows (doubling, up to ``APPLY_RETRY_MAX_S``)."""
APPLY_RETRY_MAX_S: Final = 5.0
JOURNAL_FULL_WAIT_S: Final = 2.0
"""Longest the writer waits for room in the journal before failing a commit."""
JOURNAL_META_KEY: Final = b"journal"
BARRIER_CHECK_S: Final = 1.0
"""How often the writer, waiting for the applier, checks that it still runs."""
JOURNAL_BYTES: Final = DEFAULT_BYTES
"""Default size of the scan journal (``edge.journal``)."""


class LogEntry(msgspec.Struct, frozen=True, array_like=True):
    """One scan (or quick cancellation) as the node recorded it; the sync outbox item."""

    scan_id: str
    ticket: int
    result: Result
    reason: str
    """A ``Reason`` value (scans), or a quick-cancel reason."""
    direction: Direction
    gate: str
    mode: str
    date: int
    scanned_at: float
    logged_at: float
    kind: str = "scan"
    """``scan`` or ``quick_cancel``."""
    offline: bool = False
    """Taken by a device while offline and sent later in a batch."""
    code: str = ""
    """The code, for quick cancellations only (the core cancels by code)."""


class StoredAnswer(msgspec.Struct, frozen=True, array_like=True):
    """The answer remembered by scan_id; the message is rendered per request."""

    result: Result
    reason: Reason
    direction: Direction
    ticket: TicketInfo | None = None
    entries: int | None = None


class QuickCancelAnswer(msgspec.Struct, frozen=True, array_like=True):
    """Answer of ``POST /api/v1/quick-cancel``, remembered by scan_id."""

    result: Result
    reason: str


log_encoder: Final = msgspec.msgpack.Encoder()
log_decoder: Final = msgspec.msgpack.Decoder(LogEntry)
answer_decoder: Final = msgspec.msgpack.Decoder(StoredAnswer)

WriteFn = Callable[[Any, "GroupCommitter"], None]
"""A write operation: called on the writer thread with the open write transaction."""


class ScanWrites:
    """Decided scans on their way to disk, as data (the journal can hold them, where a
    ``WriteFn`` needs the LMDB transaction). *tag* is the submitter's, handed back to the
    ``on_durable`` and ``on_applied`` hooks."""

    __slots__ = ("first_seq", "rows", "tag")

    def __init__(self, rows: list[JournalRow], tag: Any = None) -> None:
        self.rows = rows
        self.tag = tag
        self.first_seq = 0
        """The scan log seq of the first row, once the writer has given them theirs."""


class Deferred:
    """A write that commutes with scans (``GroupCommitter.submit_deferred``): it reads
    and writes only what scans never touch (a sync cursor in ``meta``) and takes no seq
    of the scan log."""

    __slots__ = ("fn",)

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn


_Op = WriteFn | ScanWrites | Deferred
_Ops = list[tuple[_Op, asyncio.Future[None]]]
_HandOver = tuple[_Ops, int]
"""Operations handed over together, and how many scans they carry (their weight)."""


class CommitFailed(Exception):
    """The batch's transaction could not be committed; nothing of it is on disk."""


class _Tainted(CommitFailed):
    """Not written: handed over while an earlier commit's failure was not yet undone."""


class _Resume:
    """Queue mark: the loop has dropped a failed commit's writes; commit again after it."""


_RESUME: Final = _Resume()


class _Journaled:
    """Scans made durable by one journal append, for the applier to store."""

    __slots__ = ("end", "last_seq", "took", "writes")

    def __init__(self, writes: list[ScanWrites], took: int, end: int, last_seq: int) -> None:
        self.writes = writes
        self.took = took
        self.end = end
        self.last_seq = last_seq


class _Barrier:
    """Operations the applier must commit to LMDB now, after every journaled scan; the
    writer thread waits for ``done``."""

    __slots__ = ("done", "error", "ops")

    def __init__(self, ops: _Ops) -> None:
        self.ops = ops
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Later:
    """Deferred writes for the applier's next transaction (no one waits for it)."""

    __slots__ = ("ops",)

    def __init__(self, ops: _Ops) -> None:
        self.ops = ops


_ApplyItem = _Journaled | _Barrier | _Later | _Resume | None
"""Journaled scans, a barrier, deferred writes, a kick (store now), or the stop mark."""


class Commit(asyncio.Future[None]):
    """A queued write cannot be called off. Cancelling the task that waits for it (a
    request cancelled at shutdown) only takes effect once the commit is done, so the
    scan's reservation in the pending overlay lasts until its write is stored (or, after
    a failed commit, until the overlays are dropped: ``on_failure``)."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


class GroupCommitter:
    """The single writer; ``submit`` returns a future resolved after the commit.

    Two levels of grouping. On the loop, everything submitted while it handles one
    round of ready events (all the requests that arrived together) becomes one batch,
    handed to the writer thread by one callback scheduled with ``call_soon``. The
    writer thread merges every batch waiting for it into ONE transaction, commits and
    fsyncs (the GIL is released meanwhile, so the loop goes on deciding the next
    scans), then resolves the futures on the loop in one callback.

    The writer runs under ``SCHED_BATCH`` (*sched_batch*): woken by a hand-over, it does
    not preempt the loop thread on the same core, whose GIL it could not take anyway;
    it runs when the loop waits for events. Each preemption cost two context switches
    for nothing (a profile at half rate showed ~20% of the node's CPU in
    ``finish_task_switch``), and the batches grow while the loop is busy. Measured
    with ``bench ab`` (``bench/RESULTS.md``): less CPU at half rate in every pair, and
    mostly a lower p99.

    Scans take a shorter way to disk (``edge.journal``): a merged commit of scans only is
    one record appended to the journal and flushed once, and their futures resolve
    then. The applier thread (also ``SCHED_BATCH``) copies journaled scans into LMDB at
    most ``APPLY_INTERVAL_S`` later, in one fully synced transaction, and hands them to
    the ``on_applied`` hooks: until then the scan service keeps their states and answers
    in its overlays. Any other write (a ``WriteFn``) goes to the applier as a barrier:
    it commits every journaled scan and the write in one transaction while the writer
    thread waits, so the scan log's order and the failure rules stay as they were. A
    write that commutes with scans (``submit_deferred``: a sync cursor) rides on the
    applier's next transaction instead, with nobody waiting.
    ``journal_bytes=0`` commits everything straight into LMDB, as before the journal.
    """

    def __init__(
        self,
        index: Index,
        loop: asyncio.AbstractEventLoop,
        *,
        interval_s: float = COMMIT_INTERVAL_S,
        sched_batch: bool = WRITER_SCHED_BATCH,
        pace_below: int = PACE_BELOW,
        journal_bytes: int = JOURNAL_BYTES,
        apply_interval_s: float = APPLY_INTERVAL_S,
    ) -> None:
        self._index = index
        self.sched_batch = sched_batch
        if pace_below < 0:
            raise ValueError("pace_below must be 0 or more")
        self.pace_below = pace_below
        """Wait for the interval only while a commit would carry fewer scans than this
        (0: always). A loaded node's batches are large: it then commits at once."""
        self.loop = loop
        """The event loop the callers' futures belong to."""
        if not 0.0 <= interval_s <= MAX_COMMIT_INTERVAL_S:  # also refuses nan
            raise ValueError(f"commit interval must be 0 to {MAX_COMMIT_INTERVAL_S} s")
        self.interval_s = interval_s
        self._last_start = 0.0
        self.paced_seconds = 0.0
        """Time the writer waited for the commit interval (``_pace``)."""
        self._batch: _Ops = []
        self._batch_weight = 0
        self._scheduled = False
        self._closed = True
        self._queue: queue.SimpleQueue[_HandOver | _Resume | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._grown = threading.Event()
        self.apply_interval_s = apply_interval_s
        self._apply_q: queue.SimpleQueue[_ApplyItem] = queue.SimpleQueue()
        self._applier: threading.Thread | None = None
        self._held: _Ops = []
        """Deferred writes the applier holds for its next transaction (applier thread)."""
        self._gone_lock = threading.Lock()
        self._applier_gone = False
        self._seqs_open = True
        """False while the applier runs deferred writes with the writer running: then no
        write may take a seq (``append_log``)."""
        self.applies = 0
        self.barriers = 0
        """Writes the applier had to store at once while the writer waited."""
        self.journaled_scans = 0
        self.apply_seconds = 0.0
        self.apply_failures = 0
        self.recovered_scans = 0
        """Scans found in the journal at start and stored in the index then."""
        self.on_durable: list[Callable[[ScanWrites], None]] = []
        """Called on the loop when scans are on disk, before their futures resolve."""
        self.on_applied: list[Callable[[ScanWrites], None]] = []
        """Called on the loop when scans are in the index (after ``on_durable``)."""
        self.journal = self._open_journal(journal_bytes)
        self.next_seq = index.last_key(index.scanlog) + 1
        self.journaled_last_seq = self.next_seq - 1
        """The last seq written to the journal (writer thread)."""
        self.commits = 0
        self.committed_ops = 0
        self.commit_seconds = 0.0
        """Wall time spent in write transactions (puts, commit, fsync), for metrics."""
        self.commit_buckets = [0] * len(COMMIT_BUCKETS_S)
        """Commits per duration bucket (cumulative counts are built when exported)."""
        self.after_commit: list[Callable[[], None]] = []
        """Called on the loop after each successful commit (e.g. wake the uploader)."""
        self.on_failure: list[Callable[[], None]] = []
        """Called on the loop as soon as a commit has failed, before anything else runs
        there: every write not committed yet will fail unwritten (``_loop_batches``), so
        whatever was reserved for them (the scan service's overlays) must go at once."""

    def start(self) -> None:
        self._closed = False
        self._stopped = self.loop.create_future()
        if self.journal is not None:
            self._applier = threading.Thread(
                target=self._run_applier, name="edge-applier", daemon=True
            )
            self._applier.start()
        self._thread = threading.Thread(target=self._run, name="edge-writer", daemon=True)
        self._thread.start()

    def submit_scans(self, writes: ScanWrites) -> asyncio.Future[None]:
        """Queue decided scans, handed over at once (the caller gathered a round's)."""
        return self.submit(writes, at_once=True, weight=len(writes.rows))

    def submit(
        self, op: _Op, *, at_once: bool = False, weight: int = 1
    ) -> asyncio.Future[None]:
        """Queue *op*; it is handed to the writer with everything else submitted in
        this round of the loop, or *at_once* (with what is already waiting, in order)
        when the caller has gathered a round's writes itself. *weight*: how many scans
        it carries (for ``pace_below``)."""
        fut: asyncio.Future[None] = Commit(loop=self.loop)
        if self._closed:
            fut.set_exception(CommitFailed("the node is not accepting writes"))
            return fut
        self._batch.append((op, fut))
        self._batch_weight += weight
        if at_once:
            self._hand_over()
        elif not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._hand_over)
        return fut

    def submit_deferred(self, fn: WriteFn) -> asyncio.Future[None]:
        """Queue *fn*, a write that commutes with scans: it reads and writes only keys
        no scan touches and takes no seq (a sync cursor). With the journal it is not a
        barrier: it waits for the applier's next transaction (``apply_interval_s`` at
        most), so the writer goes on appending scans. A node online uploads and follows
        the feed many times a second; each barrier was a synced index transaction."""
        if self.journal is None:
            return self.submit(fn)
        return self.submit(Deferred(fn))

    async def flush(self) -> None:
        """Return once every scan committed so far is stored in the index itself (not
        only in the journal): an empty write, which the applier commits after them."""
        await self.submit(_nothing)

    def _hand_over(self) -> None:
        self._scheduled = False
        if self._batch:
            self._queue.put((self._batch, self._batch_weight))
            self._batch = []
            self._batch_weight = 0

    async def stop(self) -> None:
        """Commit what is queued, refuse what comes after, and stop the thread."""
        if self._closed or self._thread is None or self._stopped is None:
            if self._thread is None and self.journal is not None:
                self.journal.close()  # never started
            return
        self._hand_over()
        self._closed = True
        self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("writer did not stop within %.0f s", STOP_TIMEOUT_S)
        else:
            self._thread.join()
        self._thread = None

    # -- writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread()
        if self.sched_batch:
            _sched_batch_this_thread()
        try:
            self._loop_batches()
        finally:
            if self._applier is not None:
                self._apply_q.put(None)
                # Until it is done: the index must not close under its transaction.
                self._applier.join()
            if self.journal is not None:
                self.journal.close()
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_set_done, self._stopped)

    def _loop_batches(self) -> None:
        """Commit what the loop hands over, in order. After a failed commit, everything
        handed over before the loop has dropped the failed writes from its overlays was
        possibly decided on them (a second scan of a ticket whose first scan was never
        stored answered ``already_used``): it is failed too, unwritten, until the loop's
        ``_RESUME`` mark comes through the queue (see ``_done``)."""
        q = self._queue
        stopping = False
        failing = False
        backlog = False
        while not stopping:
            first = q.get()
            if first is None:
                break
            if isinstance(first, _Resume):
                failing = False
                continue
            merged, weight = first
            stopping, resume, weight = self._merge(merged, weight)
            if (not failing and not backlog and not stopping and not resume
                    and (not self.pace_below or weight < self.pace_below) and self._pace()):
                # What was handed over during the wait joins this commit.
                stopping, resume, weight = self._merge(merged, weight)
            # A merge cut at MAX_BATCH left work queued: commit it without waiting.
            backlog = len(merged) >= MAX_BATCH
            error: BaseException | None = None
            journaled: _Journaled | None = None
            later: _Ops = []
            if failing:
                error = _Tainted("decided on writes of a failed commit; retry")
            else:
                merged, later = self._split_deferred(merged)
                if merged:
                    error, journaled = self._write(merged)
                    failing = error is not None
            if merged:
                with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
                    self.loop.call_soon_threadsafe(
                        self._done, merged, error, journaled is None)
            if journaled is not None:  # after ``_done``: the loop sees durable first
                self._apply_q.put(journaled)
            if later:  # after the scans handed over with them
                self._to_applier(later)
            if resume:
                failing = False

    def _split_deferred(self, merged: _Ops) -> tuple[_Ops, _Ops]:
        """(what to write now, deferred writes for the applier). With a barrier among
        them, or without a journal, everything is written now, in order."""
        if self.journal is None or not any(isinstance(op, Deferred) for op, _f in merged):
            return merged, []
        now: _Ops = []
        later: _Ops = []
        for item in merged:
            if isinstance(item[0], Deferred):
                later.append(item)
            elif isinstance(item[0], ScanWrites):
                now.append(item)
            else:
                return merged, []
        return now, later

    def _merge(self, merged: _Ops, weight: int) -> tuple[bool, bool, int]:
        """Add what waits in the queue to *merged* (up to ``MAX_BATCH``), without
        blocking; returns (stop seen, resume mark seen, the new weight). Either mark
        ends the merge: what follows it is not part of this commit."""
        q = self._queue
        while len(merged) < MAX_BATCH:
            try:
                more = q.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return True, False, weight
            if isinstance(more, _Resume):
                return False, True, weight
            merged.extend(more[0])
            weight += more[1]
        return False, False, weight

    def _pace(self) -> bool:
        """Wait (without the GIL) until ``interval_s`` after the last commit's start;
        True when it waited (what the loop handed over meanwhile joins this commit)."""
        wait = self._last_start + self.interval_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
            self.paced_seconds += wait
            return True
        return False

    def _write(self, merged: _Ops) -> tuple[BaseException | None, _Journaled | None]:
        """Make *merged* durable: (the error, or None; what the applier must still
        store, when it went to the journal). Timed for the commit metrics."""
        started = self._last_start = time.perf_counter()
        try:
            journal = self.journal
            if journal is None:
                return self._commit_once(merged), None
            if all(isinstance(op, ScanWrites) for op, _fut in merged):
                return self._append(journal, merged)
            return self._through_applier(merged), None
        finally:
            took = time.perf_counter() - started
            self.commit_seconds += took
            self.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS_S, took)] += 1

    def _append(self, journal: Journal, merged: _Ops
                ) -> tuple[BaseException | None, _Journaled | None]:
        """One journal record for the scans of *merged*, flushed."""
        first = seq = self.next_seq
        rows: list[JournalRow] = []
        writes: list[ScanWrites] = []
        for op, _fut in merged:
            assert isinstance(op, ScanWrites)
            op.first_seq = seq
            seq += len(op.rows)
            rows.extend(op.rows)
            writes.append(op)
        record = frame(journal.epoch, first, rows)
        if len(record) > min(MAX_RECORD_BYTES, journal.capacity // 4):
            return self._through_applier(merged), None  # a huge offline batch
        try:
            if self._applier is not None and self._applier.is_alive() and not journal.fits(
                    record):
                self._apply_q.put(_RESUME)  # store now, even while backing off a failure
                journal.wait_for_room(record, JOURNAL_FULL_WAIT_S)
            took, end = journal.append(first, record)
        except (OSError, JournalFull) as exc:
            log.error("journal append of %d scans failed: %s", len(rows), exc)
            return exc, None
        self.next_seq = seq
        self.commits += 1
        self.committed_ops += len(merged)
        self.journaled_scans += len(rows)
        self.journaled_last_seq = seq - 1
        return None, _Journaled(writes, took, end, seq - 1)

    def _through_applier(self, merged: _Ops) -> BaseException | None:
        self.barriers += 1
        barrier = _Barrier(merged)
        self._apply_q.put(barrier)
        applier = self._applier
        while not barrier.done.wait(BARRIER_CHECK_S):
            if applier is None or not applier.is_alive():
                return CommitFailed("the journal's applier has stopped")
        if barrier.error is None:
            self.commits += 1
            self.committed_ops += len(merged)
        return barrier.error

    def _run_ops(self, txn: Any, ops: _Ops) -> None:
        """*ops* in order in *txn*; scans get their seqs here (the caller owns
        ``next_seq`` meanwhile and gives it back if the transaction fails)."""
        for op, _fut in ops:
            if isinstance(op, ScanWrites):
                op.first_seq = self.next_seq
                self.next_seq += len(op.rows)
                put_rows(txn, self._index, op)
            elif isinstance(op, Deferred):
                op.fn(txn, self)
            else:
                op(txn, self)

    # -- applier thread --------------------------------------------------------------

    def _run_applier(self) -> None:
        """Store journaled scans in LMDB every ``apply_interval_s`` (or at once when a
        barrier comes, or ``APPLY_MAX_ROWS`` wait), until the writer's stop mark."""
        name_this_thread()
        if self.sched_batch:
            _sched_batch_this_thread()
        try:
            self._apply_until_stopped()
        except BaseException:
            log.exception("the journal's applier stopped: scans stay in the journal until "
                          "the next start, other writes fail")
            raise
        finally:
            self._fail_barriers()

    def _apply_until_stopped(self) -> None:
        q = self._apply_q
        pending: list[_Journaled] = []
        rows = 0
        due = 0.0
        failing = False
        retry_s = APPLY_RETRY_S
        held = self._held
        while True:
            item: _ApplyItem
            try:
                timeout = max(0.0, due - time.monotonic()) if pending or held else None
                item = q.get(timeout=timeout)
            except queue.Empty:
                item = _RESUME  # the interval (or the wait after a failure) is up
            if isinstance(item, _Barrier):
                try:
                    item.error = self._apply(pending, item.ops)
                except BaseException as exc:
                    item.error = exc
                    raise
                finally:  # never leave the writer waiting
                    item.done.set()
            elif isinstance(item, _Journaled | _Later):
                if not pending and not held:
                    due = time.monotonic() + self.apply_interval_s
                if isinstance(item, _Later):
                    held.extend(item.ops)
                    continue
                pending.append(item)
                rows += sum(len(w.rows) for w in item.writes)
                if rows < APPLY_MAX_ROWS or failing:
                    continue
                self._apply(pending, [])
            elif pending or held:  # the interval is up, or the stop mark
                self._apply(pending, [])
            if pending:  # not stored: kept (the journal has them), tried again later
                failing = True
                due = time.monotonic() + retry_s
                retry_s = min(retry_s * 2, APPLY_RETRY_MAX_S)
            else:
                failing = False
                retry_s = APPLY_RETRY_S
                rows = 0
            if item is None:
                return

    def _fail_barriers(self) -> None:
        """The applier is gone: fail the barriers waiting for it (``_through_applier``
        also watches the thread, for those queued after this) and the deferred writes
        it held or had queued (``_to_applier`` fails those that come after)."""
        gone = CommitFailed("the journal's applier has stopped")
        with self._gone_lock:
            self._applier_gone = True
        while True:
            try:
                item = self._apply_q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Barrier):
                item.error = gone
                item.done.set()
            elif isinstance(item, _Later):
                self._held.extend(item.ops)
        self._settle_held(gone)

    def _to_applier(self, later: _Ops) -> None:
        """Deferred writes to the applier, or failed at once if it is gone."""
        with self._gone_lock:
            if not self._applier_gone:
                self._apply_q.put(_Later(later))
                return
        self._settle(later, CommitFailed("the journal's applier has stopped"))

    def _settle_held(self, error: BaseException | None) -> None:
        """The deferred writes the applier held are stored (or failed): tell the loop."""
        if self._held:
            self._settle(list(self._held), error)
            self._held.clear()

    def _settle(self, ops: _Ops, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(_resolve, ops, error)

    def _apply(self, pending: list[_Journaled], ops: _Ops) -> BaseException | None:
        """Store *pending* (emptied once stored), then the deferred writes held
        (``_held``), then *ops* (a barrier's), in one transaction; returns the error for
        *ops*. A held write that fails is left out alone (``_run_deferred``); if *ops*
        fail, the rest is tried again without them; if the journaled scans cannot be
        stored, they stay in *pending*. Held writes are settled either way.

        Only while a barrier's *ops* run does the writer thread wait: then, and only
        then, this thread may give seqs out (``next_seq``); otherwise the writer is
        appending meanwhile, and the journaled rows carry their own."""
        journal = self.journal
        assert journal is not None
        started = time.perf_counter()
        ops_error: BaseException | None = None
        held = self._held
        with_ops = bool(ops)
        try:
            for _attempt in range(8):
                if not (pending or held or with_ops):
                    return ops_error
                seq_before = self.next_seq
                try:
                    with self._index.env.begin(write=True) as txn:
                        for journaled in pending:
                            for writes in journaled.writes:
                                put_rows(txn, self._index, writes)
                        self._run_deferred(txn, held)
                        if with_ops:
                            # The writer thread waits: every journaled scan is in *pending*.
                            self._run_ops(txn, ops)
                            _put_position(txn, self._index, Position(
                                journal.epoch, journal.offset, self.next_seq - 1))
                        elif pending:
                            _put_position(txn, self._index, Position(
                                journal.epoch, pending[-1].end, pending[-1].last_seq))
                except lmdb.MapFullError:
                    if with_ops:  # the writer waits: the seqs are this thread's
                        self.next_seq = seq_before
                    try:
                        self._grow_from_loop()
                    except RuntimeError:  # the loop is closed: nobody can grow the map
                        break
                except Exception as exc:  # an I/O failure or a bug
                    if with_ops:
                        self.next_seq = seq_before
                        log.exception("commit of %d operations failed", len(ops))
                        ops_error, with_ops = exc, False
                        continue  # the journaled scans (and held writes) alone
                    self.apply_failures += 1
                    log.exception("storing %d journaled scans in the index failed; they "
                                  "stay in the journal",
                                  sum(len(j.writes) for j in pending))
                    return ops_error
                else:
                    self._settle_held(None)
                    self._applied_now(pending, started)
                    return ops_error
            if pending:
                self.apply_failures += 1
                log.error("storing journaled scans in the index failed: the map could not "
                          "grow")
            failed = CommitFailed("the map could not grow enough")
            self._settle_held(failed)
            return ops_error or (failed if with_ops else None)
        finally:
            if held:  # a bug above must not leave a deferred write waiting forever
                self._settle_held(CommitFailed("the deferred write was not stored"))

    def _run_deferred(self, txn: Any, held: _Ops) -> None:
        """Deferred writes, before a barrier's: they were handed over first. Each in a
        child transaction: one that fails is rolled back and settled with its error at
        once, and nothing else fails with it. The writer may be appending scans
        meanwhile, so none of them may take a seq."""
        self._seqs_open = False
        try:
            for item in list(held):
                op = item[0]
                assert isinstance(op, Deferred)
                try:
                    with self._index.env.begin(write=True, parent=txn) as child:
                        op.fn(child, self)
                except lmdb.MapFullError:
                    raise  # all of it again once the map has grown
                except Exception as exc:
                    log.exception("a deferred write failed")
                    held.remove(item)
                    self._settle([item], exc)
        finally:
            self._seqs_open = True

    def _applied_now(self, pending: list[_Journaled], started: float) -> None:
        journal = self.journal
        assert journal is not None
        writes = [w for journaled in pending for w in journaled.writes]
        journal.release(sum(journaled.took for journaled in pending))
        pending.clear()
        self.applies += 1
        self.apply_seconds += time.perf_counter() - started
        if writes:
            with contextlib.suppress(RuntimeError):  # loop closed: the journal keeps them
                self.loop.call_soon_threadsafe(self._applied, writes)

    def _applied(self, writes: list[ScanWrites]) -> None:
        for w in writes:
            _call_hooks(self.on_applied, w)
        for hook in self.after_commit:
            hook()

    # -- the journal at start --------------------------------------------------------

    def _open_journal(self, capacity: int) -> Journal | None:
        """The index's journal (None when *capacity* is 0); what the journal on disk
        holds past the applied position is stored in the index first, also when the
        journal is being turned off. A missing or foreign file is replaced."""
        index = self._index
        raw = index.get_meta(JOURNAL_META_KEY.decode())
        position: Position | None = None
        if raw is not None:
            try:
                position = position_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("unreadable journal position in the index; starting a new journal")
        opened = (Journal.open_existing(index.path, position, sync=index.sync)
                  if position is not None else None)
        old: Journal | None = None
        if opened is not None:
            journal, records, end = opened
            try:
                if records:
                    stored = self._recover(records, end)
                else:
                    stored = True
                    if end != position:  # a lone wrap mark: the next record goes first
                        _write_at_start(index, lambda txn: _put_position(txn, index, end))
            except BaseException:
                journal.close()
                raise
            if stored and capacity > 0 and journal.capacity == max(capacity, MIN_BYTES):
                return journal
            if stored and capacity > 0:
                old = journal  # resized: kept if the new file cannot be made
            else:
                journal.close()  # turned off, or not this index's log: replaced
        elif position is not None and Journal.never_written(index.path):
            log.info("the journal was being made when the node last stopped: made again")
        elif position is not None:
            log.warning("the journal file does not match the index (missing, or restored "
                        "without it): starting a new one; scans it held past the last "
                        "store, if any, are not in the index")
        if capacity <= 0:
            if raw is not None:
                _write_at_start(index, lambda txn: txn.delete(JOURNAL_META_KEY, db=index.meta))
            (index.path / JOURNAL_FILE).unlink(missing_ok=True)
            return None
        try:
            journal, start = Journal.create(index.path, capacity,
                                            index.last_key(index.scanlog), sync=index.sync)
        except OSError:
            if old is None:
                raise
            log.exception("could not make a journal of %d bytes; keeping the one of %d",
                          capacity, old.capacity)
            return old
        if old is not None:
            old.close()
        _write_at_start(index, lambda txn: _put_position(txn, index, start))
        return journal

    def _recover(self, records: list[tuple[int, list[JournalRow]]], end: Position) -> bool:
        """Store what the journal held past the applied position; False if it cannot
        belong to this index's log (its seqs are taken: an old copy of the data put
        back, say), when it is left out and the journal must be replaced."""
        index = self._index
        last = index.last_key(index.scanlog)
        if records[0][0] <= last:
            log.warning("the journal's scans from seq %d are older than the index's log "
                        "(up to %d): not applied", records[0][0], last)
            return False

        def store(txn: Any) -> None:
            for first, rows in records:
                writes = ScanWrites(rows)
                writes.first_seq = first
                put_rows(txn, self._index, writes)
            _put_position(txn, index, end)

        _write_at_start(index, store)
        self.recovered_scans = sum(len(rows) for _first, rows in records)
        log.info("stored %d scans from the journal in the index", self.recovered_scans)
        return True

    def _commit_once(self, batch: _Ops) -> BaseException | None:
        for _attempt in range(8):
            seq_before = self.next_seq
            try:
                with self._index.env.begin(write=True) as txn:
                    self._run_ops(txn, batch)
            except lmdb.MapFullError:
                self.next_seq = seq_before
                self._grow_from_loop()
            except Exception as exc:  # an I/O failure or a bug: fail the batch, keep going
                self.next_seq = seq_before
                log.exception("commit of %d operations failed", len(batch))
                return exc
            else:
                self.commits += 1
                self.committed_ops += len(batch)
                return None
        return CommitFailed("the map could not grow enough")

    def scans_logged(self) -> int:
        """Scan log entries on disk: in the index, and in the journal past what the
        index holds, both read in one transaction (so never counted twice)."""
        index = self._index
        with index.env.begin() as txn:
            return int(txn.stat(index.scanlog)["entries"]) + self._journal_backlog(txn)

    @property
    def unapplied_scans(self) -> int:
        """Scans on disk in the journal and not in the index yet."""
        with self._index.env.begin() as txn:
            return self._journal_backlog(txn)

    def _journal_backlog(self, txn: Any) -> int:
        """Journaled scans past the position the index holds, as read in *txn*."""
        if self.journal is None:
            return 0
        raw = txn.get(JOURNAL_META_KEY, db=self._index.meta)
        applied = position_decoder.decode(raw).seq if raw else self.journaled_last_seq
        return max(0, self.journaled_last_seq - applied)

    def journal_status(self) -> dict[str, int] | None:
        journal = self.journal
        if journal is None:
            return None
        return {"bytes": journal.capacity, "unapplied_scans": self.unapplied_scans,
                "unapplied_bytes": journal.unapplied_bytes, "applies": self.applies,
                "apply_failures": self.apply_failures, "recovered_scans": self.recovered_scans}

    def _grow_from_loop(self) -> None:
        """LMDB resizes only while this process holds no transaction: the loop's read
        transactions never span a callback, so the loop thread does it between two."""
        self._grown.clear()

        def grow() -> None:
            try:
                self._index.grow()
            finally:
                self._grown.set()

        self.loop.call_soon_threadsafe(grow)
        self._grown.wait(STOP_TIMEOUT_S)

    def _done(self, batch: _Ops, error: BaseException | None, applied: bool) -> None:
        if error is not None and not isinstance(error, _Tainted):
            # Before any other callback can decide on them: the overlays may hold
            # reservations of writes handed over after this one, which the writer fails
            # unwritten. Waiting for their own failures to drop them (their futures'
            # callbacks) left a window in which a scan decided on a scan that was never
            # stored, and was stored itself.
            try:
                for hook in self.on_failure:
                    hook()
            finally:  # a failing hook must not leave the writer failing everything
                _resolve(batch, error)
                self._resume()
            return
        if error is not None:
            _resolve(batch, error)
            return
        for op, _fut in batch:
            if isinstance(op, ScanWrites):
                _call_hooks(self.on_durable, op)
                if applied:
                    _call_hooks(self.on_applied, op)
        _resolve(batch, None)
        if applied:
            for hook in self.after_commit:
                hook()

    def _resume(self) -> None:
        """Let the writer commit again: what is submitted from now on is decided without
        the failed writes. What was submitted before goes first, and fails."""
        self._hand_over()
        if self._thread is not None:
            self._queue.put(_RESUME)

    def append_log(self, txn: Any, entry: LogEntry) -> int:
        """Append to the scan log inside the writer's transaction; returns the seq."""
        if not self._seqs_open:
            raise CommitFailed("a deferred write cannot append to the scan log")
        seq = self.next_seq
        txn.put(u64(seq), log_encoder.encode(entry), db=self._index.scanlog, append=True)
        self.next_seq = seq + 1
        return seq


def put_rows(txn: Any, index: Index, writes: ScanWrites) -> None:
    """Store journaled scans in *txn*: each one's log entry under its seq (from
    ``writes.first_seq``), its new state and its remembered answer."""
    put = txn.put
    scanlog, states, answers = index.scanlog, index.state, index.answers
    seq = writes.first_seq
    for sid, entry, answer, ident, state in writes.rows:
        if not put(u64(seq), entry, db=scanlog, append=True):
            # Two scans under one seq: one would vanish from the log unseen.
            raise CommitFailed(f"scan log seq {seq} is not after the log's last")
        seq += 1
        if state is not None:
            put(u64(ident), state, db=states)
        try:
            put(sid, answer, db=answers)
        except lmdb.BadValsizeError:
            # A scan_id too long for a key (the API refuses those): its scan is
            # stored, only its answer is not remembered. Refusing the row would
            # fail every store after it, and every start.
            log.error("scan %d: scan_id of %d bytes cannot be a key; its answer is "
                      "not remembered", seq - 1, len(sid))


def _put_position(txn: Any, index: Index, position: Position) -> None:
    """How far the index has the journal, in the same transaction as what got it there."""
    txn.put(JOURNAL_META_KEY, log_encoder.encode(position), db=index.meta)


def _write_at_start(index: Index, write: Callable[[Any], None]) -> None:
    """One write transaction before the writer runs, growing the map as needed (no
    transaction is open in the process then)."""
    while True:
        try:
            with index.env.begin(write=True) as txn:
                write(txn)
        except lmdb.MapFullError:
            index.grow()
            continue
        return


def name_this_thread() -> None:
    """Give the OS thread the Python thread's name (first 15 bytes, Linux), so ``top
    -H``, ``ps -L`` and ``bench scan`` (CPU per thread) can tell the node's threads
    apart. Python does not do it; without it they are all "python"."""
    with contextlib.suppress(OSError):
        path = f"/proc/self/task/{threading.get_native_id()}/comm"
        with open(path, "w", encoding="ascii", errors="replace") as fh:
            fh.write(threading.current_thread().name[:15])


def _sched_batch_this_thread() -> None:
    """``SCHED_BATCH`` for the calling thread (Linux policies are per thread; no
    privilege needed), when it runs under the default policy. Elsewhere, or if refused,
    the thread keeps the policy it has."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return  # a node run under a real-time policy (chrt): never demote its writer
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        log.warning("writer thread keeps the default scheduling policy: %s", exc)


def _call_hooks(hooks: list[Callable[[ScanWrites], None]], writes: ScanWrites) -> None:
    """Each hook on its own: one that fails (a bug) must not keep the others, or the
    batch's waiters, from their part."""
    for hook in hooks:
        try:
            hook(writes)
        except Exception:
            log.exception("scan hook %r failed", hook)


def _nothing(_txn: Any, _committer: GroupCommitter) -> None:
    pass


def _set_done(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _resolve(batch: _Ops, error: BaseException | None) -> None:
    for _op, fut in batch:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(CommitFailed(str(error)))
