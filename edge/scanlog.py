"""The durable scan log and its group committer: the node's single LMDB writer.

Every write to the index goes through ``GroupCommitter``: scans (log entry + new state +
remembered answer), quick cancellations, gate profiles, and later the sync feed. A
dedicated thread takes everything queued, writes it in ONE transaction, commits (fsync),
and only then resolves each caller's future on the event loop, so an answer never leaves
the node before the scan that produced it is on disk. Concurrent scans share a commit.

If the map is full, the writer aborts the batch, asks the loop thread to grow the map
(LMDB allows it only while no transaction is open in the process, and the loop never
holds a read transaction across a callback), and retries the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import lmdb
import msgspec

from edge.index import Index, u64
from edge.model import Direction, Result, TicketInfo
from sync.rules import Reason

log = logging.getLogger(__name__)

MAX_BATCH: Final = 1024
"""Most operations committed in one transaction."""
STOP_TIMEOUT_S: Final = 10.0


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


class CommitFailed(Exception):
    """The batch's transaction could not be committed; nothing of it is on disk."""


class GroupCommitter:
    """One writer thread; ``submit`` returns a future resolved after the commit."""

    def __init__(self, index: Index, loop: asyncio.AbstractEventLoop) -> None:
        self._index = index
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[WriteFn, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="edge-writer", daemon=True)
        self.next_seq = index.last_key(index.scanlog) + 1
        self.commits = 0
        self.committed_ops = 0
        self.last_commit_at = 0.0
        self._grown = threading.Event()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def submit(self, op: WriteFn) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((op, fut))
        return fut

    async def stop(self) -> None:
        """Flush what is queued, then stop the thread."""
        if not self._started:
            return
        self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("writer did not stop within %.0f s", STOP_TIMEOUT_S)
        else:
            self._thread.join()
        self._started = False

    # -- writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop_batches()
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_set_done, self._stopped)

    def _loop_batches(self) -> None:
        q = self._queue
        stopping = False
        while not stopping:
            first = q.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[WriteFn, asyncio.Future[None]]]) -> None:
        error: BaseException | None = None
        for _attempt in range(8):
            seq_before = self.next_seq
            try:
                with self._index.env.begin(write=True) as txn:
                    for op, _fut in batch:
                        op(txn, self)
                error = None
                break
            except lmdb.MapFullError:
                self.next_seq = seq_before
                self._grow_from_loop()
            except Exception as exc:  # an I/O failure or a bug: fail the batch, keep going
                self.next_seq = seq_before
                log.exception("commit of %d operations failed", len(batch))
                error = exc
                break
        else:
            error = CommitFailed("map could not grow enough")
        self.commits += 1
        self.committed_ops += len(batch)
        self.last_commit_at = time.time()
        # A closed loop (shutdown) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, batch, error)

    def _grow_from_loop(self) -> None:
        self._grown.clear()

        def grow() -> None:
            try:
                self._index.grow()
            finally:
                self._grown.set()

        self._loop.call_soon_threadsafe(grow)
        self._grown.wait(STOP_TIMEOUT_S)

    def append_log(self, txn: Any, entry: LogEntry) -> int:
        """Append to the scan log inside the writer's transaction; returns the seq."""
        seq = self.next_seq
        txn.put(u64(seq), log_encoder.encode(entry), db=self._index.scanlog, append=True)
        self.next_seq = seq + 1
        return seq


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve(
    batch: list[tuple[WriteFn, asyncio.Future[None]]], error: BaseException | None
) -> None:
    for _op, fut in batch:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(CommitFailed(str(error)))
