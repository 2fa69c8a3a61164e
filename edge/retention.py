"""Retention: the scan log and the remembered answers do not grow for ever.

A node that follows a core for a season logs every scan and remembers every answer by
scan_id: a few hundred bytes each, millions of scans. Once the core has acknowledged a
log entry (it is below the follower's ``upload_cursor``) and it is older than the
retention, the entry and its remembered answer are deleted, in chunks through the
single writer so that scans never wait long behind it. What stays:

- every entry the core has not acknowledged (the outbox), whatever its age;
- the newest entry, whose seq numbers the next ones (``GroupCommitter.next_seq``);
- the per-ticket scan state, which decides the next scan: a scan_id older than the
  retention sent again is decided afresh, on that state (``already_used`` for a
  single-entry ticket it admitted).

A node without a core keeps everything: its log is the only record of its scans.

Deleting a remembered answer is a random delete in a large B-tree: a chunk of 2,000
took 170-300 ms to commit on the reference VM, and scans queued behind it. So the
pruner works only while the node is quiet (no scan for ``QUIET_S``), in chunks of
``PRUNE_CHUNK`` with a pause between them, and stops as soon as scans come.

The horizon is ``keep_s`` before the newest entry's time or the clock, whichever is
earlier: a clock that jumps ahead (a box without a real-time clock, a bad NTP answer)
does not make the entries of a minute ago look a month old until new scans are logged
under it, and those only come with activity, which stops the pruner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from edge.index import U64
from edge.scan import QUICK_CANCEL_PREFIX, ScanService
from edge.scanlog import CommitFailed, GroupCommitter, log_decoder

log = logging.getLogger(__name__)

DEFAULT_KEEP_DAYS: Final = 30
MAX_KEEP_DAYS: Final = 3650
DAY_S: Final = 86400.0
PRUNE_EVERY_S: Final = 3600.0
"""Between two runs that found nothing more to delete."""
RETRY_S: Final = 300.0
"""Between two runs while a backlog remains (a run stopped by scans, or by its cap)."""
FIRST_PRUNE_AFTER_S: Final = 60.0
"""Not while the node starts (and maybe faces the opening surge): a minute later."""
QUIET_S: Final = 60.0
"""The pruner works only when no scan was counted for this long."""
PRUNE_CHUNK: Final = 200
"""Entries deleted per write: 20-30 ms of the writer's time on the reference VM."""
CHUNK_PAUSE_S: Final = 0.2
MAX_CHUNKS_PER_RUN: Final = 1000


class Pruner:
    """Deletes acknowledged log entries older than *keep_s*, and their answers."""

    def __init__(
        self,
        service: ScanService,
        keep_s: float,
        *,
        clock: Callable[[], float] = time.time,
        chunk: int = PRUNE_CHUNK,
        quiet_s: float = QUIET_S,
        pause_s: float = CHUNK_PAUSE_S,
    ) -> None:
        if keep_s <= 0:
            raise ValueError("retention must be positive")
        self.service = service
        self.index = service.index
        self.committer: GroupCommitter = service.committer
        self.keep_s = keep_s
        self.clock = clock
        self.chunk = chunk
        self.quiet_s = quiet_s
        self.pause_s = pause_s
        self._seen_scans = service.counters.scans
        self._active_at = time.monotonic()
        """When a change of the scan count was last seen (start counts as activity)."""
        self.backlog = False
        """The last run stopped before everything due was deleted."""
        self.pruned = 0
        """Log entries deleted since start (with their remembered answers)."""
        self._task: asyncio.Task[None] | None = None

    def status(self) -> dict[str, float | int]:
        return {"keep_days": self.keep_s / DAY_S, "pruned": self.pruned}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(FIRST_PRUNE_AFTER_S)
        while True:
            try:
                await self.prune()
            except CommitFailed as exc:  # the disk: try again at the next round
                log.warning("pruning the scan log failed: %s", exc)
            except Exception:  # a bug must not end retention silently, nor the node
                log.exception("pruning the scan log failed")
            await asyncio.sleep(RETRY_S if self.backlog else PRUNE_EVERY_S)

    def quiet(self) -> bool:
        """No scan counted for ``quiet_s`` (as far as the calls to this have seen)."""
        scans = self.service.counters.scans
        now = time.monotonic()
        if scans != self._seen_scans:
            self._active_at = now
            self._seen_scans = scans
        return now - self._active_at >= self.quiet_s

    async def prune(self) -> int:
        """Delete what is due, one chunk per commit, while the node is quiet; returns
        how many entries went."""
        total = 0
        self.backlog = True
        for chunk in range(MAX_CHUNKS_PER_RUN):
            if not self.quiet():
                break
            keys = self._due(self.clock())
            if not keys:
                self.backlog = False
                break
            if chunk and self.pause_s:
                await asyncio.sleep(self.pause_s)
                if not self.quiet():
                    break
            await self.committer.submit(self._delete(keys))
            total += len(keys)
            self.pruned += len(keys)
        if total:
            log.info("pruned %d scan log entries older than %.0f days", total,
                     self.keep_s / DAY_S)
        return total

    def _due(self, now: float) -> list[tuple[bytes, bytes]]:
        """(log key, answer key) of the oldest entries that may go, at most a chunk."""
        acknowledged = self.index.meta_int("upload_cursor")
        out: list[tuple[bytes, bytes]] = []
        with self.index.env.begin(db=self.index.scanlog) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return out
            (newest,) = U64.unpack(cursor.key())
            newest_at = _logged_at(cursor.value())
            horizon = min(now, now if newest_at is None else newest_at) - self.keep_s
            limit = min(acknowledged, newest - 1)
            if not cursor.first():
                return out
            for key, value in cursor:
                (seq,) = U64.unpack(key)
                if seq > limit or len(out) >= self.chunk:
                    break
                try:
                    entry = log_decoder.decode(value)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    # Unreadable, and the upload cursor is past it: quarantined by the
                    # uploader (or damaged after it went up). Its age and its answer's
                    # key are unknown: it goes now, and that answer stays (a small
                    # leak, for an entry that should never exist).
                    out.append((key, b""))
                    continue
                if entry.logged_at >= horizon:
                    break  # the log is in logging order: the rest is newer
                sid = entry.scan_id.encode()
                out.append((key, QUICK_CANCEL_PREFIX + sid if entry.kind == "quick_cancel"
                            else sid))
        return out

    def _delete(self, keys: list[tuple[bytes, bytes]]) -> Callable[[Any, GroupCommitter], None]:
        scanlog, answers = self.index.scanlog, self.index.answers

        def op(txn: Any, _committer: GroupCommitter) -> None:
            for log_key, answer_key in keys:
                txn.delete(log_key, db=scanlog)
                if answer_key:
                    txn.delete(answer_key, db=answers)

        return op


def _logged_at(raw: bytes) -> float | None:
    try:
        return log_decoder.decode(raw).logged_at
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
