"""The durable scan log and its group committer: the node's single LMDB writer.

Every write to the index goes through ``GroupCommitter``: scans (log entry + new state +
remembered answer), quick cancellations, gate profiles, and later the sync feed. All
that was submitted together is written in ONE transaction, committed (fsync), and only
then are the callers' futures resolved, so an answer never leaves the node before the
scan that produced it is on disk. Concurrent scans share a commit.

If the map is full, the batch is aborted, the map grows (LMDB allows it only while no
transaction is open in the process: the commit runs between read transactions on the
loop thread), and the same batch is retried.
"""

from __future__ import annotations

import asyncio
import logging
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


class CommitFailed(Exception):
    """The batch's transaction could not be committed; nothing of it is on disk."""


class GroupCommitter:
    """The single writer; ``submit`` returns a future resolved after the commit.

    Operations submitted while the loop handles one batch of ready events (all the
    requests that arrived together) are written in one transaction, committed and
    fsynced by one callback scheduled with ``call_soon``. The commit runs on the loop
    thread: an fsync costs about 0.3 ms here, far less than handing every batch to a
    writer thread and back, which under load waits for the GIL twice per batch.
    """

    def __init__(self, index: Index, loop: asyncio.AbstractEventLoop) -> None:
        self._index = index
        self._loop = loop
        self._batch: list[tuple[WriteFn, asyncio.Future[None]]] = []
        self._scheduled = False
        self._closed = False
        self.next_seq = index.last_key(index.scanlog) + 1
        self.commits = 0
        self.committed_ops = 0
        self.last_commit_at = 0.0
        self.after_commit: list[Callable[[], None]] = []
        """Called on the loop after each successful commit (e.g. wake the uploader)."""

    def start(self) -> None:
        self._closed = False

    def submit(self, op: WriteFn) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            fut.set_exception(CommitFailed("the node is shutting down"))
            return fut
        self._batch.append((op, fut))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
        return fut

    async def stop(self) -> None:
        """Commit what is queued; refuse what comes after."""
        self.flush()
        self._closed = True

    def flush(self) -> None:
        self._scheduled = False
        while self._batch:
            batch = self._batch[:MAX_BATCH]
            del self._batch[:MAX_BATCH]
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
                self._index.grow()
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
        _resolve(batch, error)
        if error is None:
            for hook in self.after_commit:
                hook()

    def append_log(self, txn: Any, entry: LogEntry) -> int:
        """Append to the scan log inside the writer's transaction; returns the seq."""
        seq = self.next_seq
        txn.put(u64(seq), log_encoder.encode(entry), db=self._index.scanlog, append=True)
        self.next_seq = seq + 1
        return seq


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
