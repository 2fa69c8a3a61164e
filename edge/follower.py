"""The node's side of sync: follow the core's change feed, upload the scan log.

Two named tasks share one ``CoreClient``:

- **follow**: long-polls ``changes?after=cursor``; every batch (records, catalogue,
  other nodes' admissions) and the new cursor are written in ONE transaction through the
  group committer, so a crash never loses or applies a change twice. A node with an empty
  index first downloads and imports the venue snapshot; a ``Resync`` change does it
  again. Batches whose signature does not verify against the node's public keys are
  refused: a device on the venue network cannot inject validity changes.
- **upload**: the scan log is the outbox. Entries after the upload cursor go up in
  order (scans as ``ScanUpload`` batches, quick cancellations one by one), idempotent by
  scan_id; the cursor advances, durably, only past what the core acknowledged (stored,
  duplicate or refused — all final). Transport failures retry with capped, jittered
  backoff; it is woken by every commit, so scans reach the core within milliseconds.

Other nodes' admissions (``ScanAdmitted``) are applied to local scan state with
``sync.rules.merge`` (the decision's ``step``, except that a scan clearly older, by its
node's clock, than what the state saw counts but cannot move presence), reserved in
the scan service's pending overlay exactly like a local scan, so a concurrent local scan
sees them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from edge.decision import limits_of
from edge.importer import ImportReport, import_into
from edge.index import CURSOR_TAG_KEY, REPLAY_KEY, U64, encoder, record_decoder, u64
from edge.scan import QUICK_CANCEL_BEFORE, ScanService
from edge.scanlog import CommitFailed, GroupCommitter, LogEntry, log_decoder
from sync.client import (
    RETRYABLE,
    CoreClient,
    CoreRefused,
    CoreUnavailable,
    FeedForged,
    SyncError,
    Verifier,
    sleep_or,
)
from sync.codes import KeyRing, code_digest, verify_feed
from sync.feed import Backoff, Link
from sync.rules import Direction, Mode, Reason, ScanState, merge
from sync.snapshot import Catalog, Record, SnapshotReader, Status
from sync.wire import (
    CatalogChanged,
    ChangeBatch,
    QuickCancelRequest,
    RecordChanged,
    Resync,
    ScanAdmitted,
    ScanItem,
    ScanUpload,
)

log = logging.getLogger(__name__)

LONG_POLL_S: Final = 20.0
UPLOAD_BATCH: Final = 1000
UPLOAD_COALESCE_S: Final = 0.01
"""After a wake-up, wait this long so scans committed together go up together."""
IDLE_UPLOAD_CHECK_S: Final = 1.0
REFUSED_RETRY_S: Final = 5.0
"""Wait after a 4xx on the feed or upload (bad token, unknown venue): a config error."""
UNEXPECTED_RETRY_S: Final = 5.0
UNEXPECTED_RETRY_CAP_S: Final = 300.0
"""First and longest wait after an error no branch expects (a bug, a snapshot this
version cannot read): doubled at each repeat, so it never hammers the core."""
QUARANTINE_PREFIX: Final = b"quarantine:"
"""Meta key prefix (+ the seq): a scan log entry that could not be read, as it was."""
ITEM_REFUSED: Final = frozenset({400, 413, 422})
"""A quick cancel the core refuses as a bad request: final for that item, passed over
(retrying it would hold every later scan in the outbox for good)."""
_VALID_MODES: Final = frozenset(m.value for m in Mode)
_VALID_REASONS: Final = frozenset(r.value for r in Reason)


def _verifier(keyring: Callable[[], KeyRing]) -> Verifier:
    """Checks the core's signed answers with the node's current public keys."""

    def verify(body: bytes, header: str | None, domain: bytes) -> bool:
        return verify_feed(body, header or "", keyring(), domain=domain)

    return verify


class ReplayPending(msgspec.Struct, frozen=True, array_like=True):
    """Admissions still to replay after a snapshot import: ``after < seq <= upto``."""

    after: int
    upto: int
    own: bool
    """Replay this node's own admissions too (it has no scan state at all)."""


_replay_decoder: Final = msgspec.msgpack.Decoder(ReplayPending)
_tag_decoder: Final = msgspec.msgpack.Decoder(tuple[int, str])


class Follower:
    def __init__(self, service: ScanService, client: CoreClient, node_id: str) -> None:
        self.service = service
        self.index = service.index
        self.committer: GroupCommitter = service.committer
        self.client = client
        self.node_id = node_id
        self.down = Link()
        self.up = Link()
        self.head: int | None = None
        """The core's latest change for the venue, as last told (None: not yet)."""
        self.caught_up_at: float | None = None
        self.applied_changes = 0
        self.uploaded = 0
        self._quarantine_checked = False
        self.refused: dict[str, int] = {}
        self._wake_upload = asyncio.Event()
        self._outbox = asyncio.Lock()
        """Held from reading the outbox to storing the upload cursor, and by an import
        that resets that cursor: an upload in flight cannot store a cursor over it."""
        self._tag: tuple[int, str] | None = None
        """The feed cursor and its change's tag (``sync.wire``), once read or moved."""
        self._tasks: list[asyncio.Task[None]] = []
        self.committer.after_commit.append(self._wake_upload.set)
        self.verify = _verifier(lambda: self.service.keyring)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(), name="edge-sync-follow"),
            asyncio.create_task(self._upload(), name="edge-sync-upload"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("sync task %s failed", task.get_name())
        self._tasks = []
        if self._wake_upload.set in self.committer.after_commit:
            self.committer.after_commit.remove(self._wake_upload.set)

    # -- status ----------------------------------------------------------------------

    @property
    def quarantined(self) -> int:
        """Unreadable log entries kept in quarantine (``_quarantine``), as stored."""
        return len(self.index.meta_prefixed(QUARANTINE_PREFIX))

    def upload_cursor(self) -> int:
        return self.index.meta_int("upload_cursor")

    def outbox_depth(self) -> int:
        return max(0, self.committer.next_seq - 1 - self.upload_cursor())

    def status(self, now: float) -> dict[str, Any]:
        cursor = self.service.cursor()
        return {
            "cursor": cursor,
            "head": self.head,
            "lag_changes": max(0, self.head - cursor) if self.head is not None else None,
            "lag_s": (
                0.0 if self.caught_up_at is not None and self.down.connected
                else (round(now - self.caught_up_at, 3) if self.caught_up_at else None)
            ),
            "outbox": self.outbox_depth(),
            "upload_cursor": self.upload_cursor(),
            "connected": self.down.connected and (self.up.connected or not self.up.failures),
            "changes": self.down.as_dict(),
            "scans": self.up.as_dict(),
            "applied_changes": self.applied_changes,
            "uploaded": self.uploaded,
            "quarantined": self.quarantined,
            "refused_by_core": dict(self.refused),
        }

    # -- following -------------------------------------------------------------------

    async def bootstrap(self, data: Path, *, lost: bool = False) -> None:
        """Download the venue snapshot, check it, and import it (empty index, or resync;
        *lost*: the core lost history this node followed, see ``_resync``).

        The core signs the snapshot's SHA-256; the node checks that signature with the
        public keys it already has. A node that never had any trusts the keys the
        snapshot itself carries (trust on first use): it checks the snapshot is whole and
        consistent, and every later batch is then held to those keys.
        """
        dest = data / "bootstrap.gksnap"
        size, cursor, sha256 = await self.client.download_snapshot(dest)
        keyring = self.service.keyring
        with dest.open("rb") as fh:
            reader = SnapshotReader(fh)
            if reader.header.cursor != cursor:
                dest.unlink(missing_ok=True)
                raise FeedForged("snapshot header and cursor header disagree")
            if not len(keyring):
                catalog_keys = reader.catalog.keys
                keyring = KeyRing.from_raw(
                    {k.id: k.public for k in catalog_keys},
                    {k.id for k in catalog_keys if k.revoked},
                )
        trusted = keyring
        signed = await self.client.snapshot_digest(cursor, _verifier(lambda: trusted))
        if signed.cursor != cursor or signed.sha256 != sha256:
            dest.unlink(missing_ok=True)
            raise FeedForged("snapshot does not match the core's signed digest")
        # The import is one write transaction of the single writer: scans queue
        # behind it, as they must, since the index is being replaced. The snapshot has
        # records but no scan state: the same transaction notes which admissions to
        # replay, so a crash before the replay ends resumes it. All of them: a node with
        # no state needs its own too; a node that resyncs, the other nodes' ones, from
        # the start, since the core asks for a resync only once it lost the history the
        # node followed (restored from a backup), and where that history forked is not
        # known. Those the node applied before count again (``sync.rules.merge``: an
        # entry of a multi-entry ticket is counted twice; presence and single use hold).
        reports: list[ImportReport] = []
        fresh = (self.index.counts()["state"] == 0 and not self.service.pending_state
                 and not self.service.unapplied_state)
        # A replay of its own admissions too, cut short, is one still: the state holds
        # only the part replayed, and the node's own admissions may not be in it.
        unfinished = self.index.get_meta(REPLAY_KEY.decode())
        own = fresh or (unfinished is not None and _replay_decoder.decode(unfinished).own)
        replay_raw = encoder.encode(ReplayPending(0, cursor, own))
        # The core lost history (a snapshot behind this node's cursor, or the same
        # cursor in another history), and with it scans this node uploaded. Send the
        # whole outbox again: the core keeps one per scan_id, and a ticket admitted
        # twice meanwhile is then reported as a conflict. (Entries the retention
        # deleted are gone for good.)
        was = self.service.cursor()
        resend = cursor < was or lost

        def op(txn: Any, _committer: GroupCommitter) -> None:
            reports.clear()
            with dest.open("rb") as fh:
                reports.append(import_into(txn, self.index, fh))
            txn.put(REPLAY_KEY, replay_raw, db=self.index.meta)
            if resend:
                txn.put(b"upload_cursor", encoder.encode(0), db=self.index.meta)

        started = time.monotonic()
        self.service.importing += 1  # quick cancels wait for the new index (``Resyncing``)
        try:
            async with self._outbox:
                await self.committer.submit(op)
        finally:
            self.service.importing -= 1
        if resend:
            log.warning("the core lost history this node followed (cursor %d, was %d): "
                        "the scan log goes up again", cursor, was)
        self.service.cursor_ahead = 0  # the snapshot's cursor is the one from now on
        self._tag = None  # the snapshot's, as the import stored it
        self.head = None  # a core restored from a backup is behind the head seen before
        report = reports[0]
        dest.unlink(missing_ok=True)
        self.service.reload()
        log.info("bootstrapped %d records (%d bytes) at cursor %d in %.2f s",
                 report.records, size, report.cursor, time.monotonic() - started)
        await self.replay_pending(resync_if_short=False)

    async def replay_pending(self, *, resync_if_short: bool = True) -> None:
        """Replay the admissions a snapshot import left to replay (see ``bootstrap``)."""
        raw = self.index.get_meta(REPLAY_KEY.decode())
        if raw is None:
            return
        pending = _replay_decoder.decode(raw)
        after = pending.after
        replayed = 0
        while after < pending.upto:
            batch = await self.client.admissions(after, pending.upto, self.verify)
            admitted = [
                c for c in batch.changes
                if isinstance(c, ScanAdmitted) and (pending.own or c.node != self.node_id)
            ]
            after = batch.cursor
            # With each batch, how far the replay got: one cut short (the core gone, the
            # node killed) resumes after it. Was: from the start, applying the batches
            # stored already a second time (entries counted twice, an old exit applied
            # over a newer local entry).
            await self._commit_admissions(
                admitted, {}, None,
                self._end_replay if after >= pending.upto
                else self._replay_progress(ReplayPending(after, pending.upto, pending.own)),
            )
            replayed += len(admitted)
            if not batch.more and after < pending.upto:
                break
        if after < pending.upto:
            # The core is behind the snapshot this replay is for (restored from a backup
            # meanwhile): it can never answer up to there. Resync, once: a core that
            # answers the new snapshot's replay short too is retried with backoff.
            if not resync_if_short:
                raise CoreUnavailable("admissions replay ended early")
            await self._resync(f"the core answered the replay up to {after}, not up to "
                               f"{pending.upto}")
            return
        await self._commit_admissions([], {}, None, self._end_replay)
        log.info("replayed %d admissions up to cursor %d", replayed, pending.upto)

    def _end_replay(self, txn: Any) -> None:
        txn.delete(REPLAY_KEY, db=self.index.meta)

    def _replay_progress(self, pending: ReplayPending) -> Callable[[Any], None]:
        raw = encoder.encode(pending)

        def put(txn: Any) -> None:
            txn.put(REPLAY_KEY, raw, db=self.index.meta)

        return put

    async def _commit_admissions(
        self,
        admitted: list[ScanAdmitted],
        records: dict[int, Record],
        catalog: Catalog | None,
        also: Callable[[Any], None] | None,
    ) -> None:
        """Apply other nodes' admissions to scan state, with *also* (records, cursor,
        end of a replay) in the same transaction; the new states are reserved in the
        pending overlay like local scans until the commit."""
        states = self._reserve_foreign(admitted, records, catalog)
        rows = [(ident, encoder.encode(state)) for ident, (state, _gen) in states.items()]
        index = self.index

        def op(txn: Any, _committer: GroupCommitter) -> None:
            for ident, raw in rows:
                txn.put(u64(ident), raw, db=index.state)
            if also is not None:
                also(txn)

        try:
            await self.committer.submit(op)
        finally:
            for ident, (_state, generation) in states.items():
                self.service.release_state(ident, generation)

    def needs_bootstrap(self) -> bool:
        return self.service.cursor() == 0 and self.index.counts()["records"] == 0

    async def _follow(self) -> None:
        backoff = Backoff()
        unexpected = _Unexpected("following the change feed")
        data = self.index.path
        while True:
            try:
                if self.needs_bootstrap():
                    await self.bootstrap(data)
                await self.replay_pending()
                # The first poll does not wait: the node learns the head (and shows
                # itself connected) at once, then long-polls.
                wait = LONG_POLL_S if self.down.connected else 0.0
                asked = self.service.cursor()
                batch = await self.client.changes(asked, wait, self.verify)
                if self._diverged(asked, batch):
                    await self._resync(f"the core's change {asked} is not the one this "
                                       "node applied")
                    continue
                self._adopt_tag(asked, batch)
                await self.apply(batch)
            except CoreRefused as exc:
                self.down.failed(time.time(), str(exc))
                log.warning("change feed refused: %s", exc)
                await asyncio.sleep(REFUSED_RETRY_S)
            except RETRYABLE as exc:
                self.down.failed(time.time(), str(exc))
                await asyncio.sleep(backoff.next_delay())
            except SyncError as exc:  # pragma: no cover - every SyncError is classified
                self.down.failed(time.time(), str(exc))
                await asyncio.sleep(REFUSED_RETRY_S)
            except CommitFailed as exc:  # the disk: nothing applied; try the batch again
                self.down.failed(time.time(), f"commit failed: {exc}")
                await asyncio.sleep(backoff.next_delay())
            except Exception as exc:  # a bug, a snapshot this version cannot read
                self.down.failed(time.time(), f"internal error: {exc!r}")
                await asyncio.sleep(unexpected.failed(exc))
            else:
                backoff.reset()
                unexpected.reset()
                now = time.time()
                self.down.ok(now)
                self.head = max(self.head or 0, batch.head, batch.cursor)
                if not batch.more:
                    self.caught_up_at = now

    def cursor_tag(self) -> tuple[int, str]:
        """The feed cursor as last stored or moved, and its change's tag ("": unknown)."""
        if self._tag is None:
            raw = self.index.get_meta(CURSOR_TAG_KEY.decode())
            self._tag = _tag_decoder.decode(raw) if raw else (0, "")
        return self._tag

    async def _resync(self, why: str) -> None:
        """Take a snapshot again: the core lost history this node followed (restored
        from a backup). It asks with a ``Resync`` when the node's cursor is ahead of
        it; the node notices by itself when the core's new changes have passed that
        cursor (``_diverged``) or the end of a replay. Either way the scans the core
        lost go up again (``bootstrap``)."""
        log.warning("%s (a core restored from a backup?): resync", why)
        await self.bootstrap(self.index.path, lost=True)

    def _adopt_tag(self, asked: int, batch: ChangeBatch) -> None:
        """A cursor stored without its tag (by a version before tags, or an import of
        a snapshot without one) takes the core's, so the next restore is noticed."""
        if self.cursor_tag()[1] or not batch.after_tag or asked == 0:
            return
        self._tag = (asked, batch.after_tag)
        self.committer.submit_deferred(self._put_meta(
            (CURSOR_TAG_KEY, encoder.encode(self._tag)),
        )).add_done_callback(_log_failure)

    def _diverged(self, asked: int, batch: ChangeBatch) -> bool:
        """The core's change *asked* is another one than the change this node's cursor
        stands at: the core lost the history the node followed and made new changes
        under the same numbers (a restore from a backup, then writes past the node's
        cursor). Unknown on either side (an older core or node): not diverged."""
        cursor, tag = self.cursor_tag()
        return bool(cursor == asked and tag and batch.after_tag and batch.after_tag != tag)

    async def apply(self, batch: ChangeBatch) -> None:
        """Write a batch of changes and its cursor in one transaction."""
        if any(isinstance(c, Resync) for c in batch.changes):
            # Even when the core's head passes this node's cursor again before the
            # snapshot is taken (the other nodes resending their logs): lost history.
            await self._resync(f"the core asks for a resync at cursor {self.service.cursor()}")
            return
        records: dict[int, Record] = {}
        catalog: Catalog | None = None
        admitted: list[ScanAdmitted] = []
        for change in batch.changes:
            if isinstance(change, RecordChanged):
                records[change.record.id] = change.record
            elif isinstance(change, CatalogChanged):
                catalog = change.catalog
            elif isinstance(change, ScanAdmitted) and change.node != self.node_id:
                admitted.append(change)
        if not records and catalog is None and not admitted:
            self._skip_to(batch.cursor, batch.tag)
            self.applied_changes += len(batch.changes)
            return
        cursor_raw = encoder.encode(batch.cursor)
        tag_raw = encoder.encode((batch.cursor, batch.tag))
        catalog_raw = encoder.encode(catalog) if catalog is not None else None
        record_rows = [(r, encoder.encode(r)) for r in records.values()]
        index = self.index

        def write(txn: Any) -> None:
            for record, raw in record_rows:
                key = u64(record.id)
                old_raw = txn.get(key, db=index.records)
                if old_raw is not None:
                    old = record_decoder.decode(old_raw)
                    if old.code_digest != record.code_digest:
                        txn.delete(old.code_digest, db=index.codes)
                    for uid in set(old.media) - set(record.media):
                        txn.delete(code_digest(uid), db=index.media)
                txn.put(key, raw, db=index.records)
                txn.put(record.code_digest, key, db=index.codes)
                for uid in record.media:
                    txn.put(code_digest(uid), key, db=index.media)
            if catalog_raw is not None:
                txn.put(b"catalog", catalog_raw, db=index.meta)
            txn.put(b"cursor", cursor_raw, db=index.meta)
            txn.put(CURSOR_TAG_KEY, tag_raw, db=index.meta)

        # Until the commit, scans and quick cancels decide on these versions, as the
        # writer will have stored them by the time their own writes land.
        self.service.reserve_records(records)
        try:
            await self._commit_admissions(admitted, records, catalog, write)
        finally:
            self.service.release_records(records)
        self._tag = (batch.cursor, batch.tag)
        if catalog is not None:
            self.service.reload()
        self.applied_changes += len(batch.changes)

    def _skip_to(self, cursor: int, tag: str) -> None:
        """A batch with nothing for the index (this node's own admissions coming back,
        while it scans and uploads): the index is consistent with *cursor* as it is.
        The next poll asks from there at once (``ScanService.cursor_ahead``); the
        cursor is stored with the applier's next transaction, not as a barrier of its
        own: a node that scans and uploads gets such a batch many times a second. A
        crash before it is stored polls those changes again, and skips them again."""
        if cursor <= self.service.cursor():
            return
        self.service.cursor_ahead = cursor
        self._tag = (cursor, tag)
        # Stored before any write submitted after it (a later batch's cursor, a
        # resync's): the applier runs deferred writes first in a barrier's transaction.
        self.committer.submit_deferred(self._put_meta(
            (b"cursor", encoder.encode(cursor)),
            (CURSOR_TAG_KEY, encoder.encode((cursor, tag))),
        )).add_done_callback(_log_failure)

    def _put_meta(self, *items: tuple[bytes, bytes]) -> Callable[[Any, GroupCommitter], None]:
        """A write of ``meta`` keys (a sync cursor, with its tag)."""
        index = self.index

        def op(txn: Any, _committer: GroupCommitter) -> None:
            for key, raw in items:
                txn.put(key, raw, db=index.meta)

        return op

    def _reserve_foreign(
        self,
        admitted: list[ScanAdmitted],
        records: dict[int, Record],
        catalog: Catalog | None,
    ) -> dict[int, tuple[ScanState, int]]:
        """Apply other nodes' admissions to scan state; reserve the results."""
        states: dict[int, tuple[ScanState, int]] = {}
        if not admitted:
            return states
        dates = {d.id: d for d in catalog.dates} if catalog else self.service.dates
        products = {p.id: p for p in catalog.products} if catalog else self.service.products
        with self.index.env.begin() as txn:
            for change in admitted:
                item = change.item
                if not item.ticket or item.mode not in _VALID_MODES:
                    continue
                record = records.get(item.ticket)
                if record is None:
                    raw = txn.get(u64(item.ticket), db=self.index.records)
                    record = record_decoder.decode(raw) if raw else None
                date = dates.get(item.date)
                if record is None or date is None:
                    continue
                state = states[item.ticket][0] if item.ticket in states else self.service.state_in(
                    txn, item.ticket
                )
                product = products.get(record.event) if record.kind else None
                limits = limits_of(product) if record.kind else limits_of(None)
                direction = Direction.EXIT if item.direction == Direction.EXIT else Direction.ENTRY
                new_state = merge(
                    state, Mode(item.mode), direction, date.id, date.event,
                    date.day or self.service.dates.get(date.id, date).day, limits,
                    _merge_time(item),
                )
                if new_state is state:
                    # Refused here too (the two nodes disagree; the core reports the
                    # conflict), or older than what this node saw since: local state
                    # stays what this node decided.
                    continue
                generation = self.service.reserve_state(item.ticket, new_state)
                states[item.ticket] = (new_state, generation)
        return states

    # -- uploading -------------------------------------------------------------------

    def read_outbox(
        self, after: int, limit: int, unreadable: list[tuple[int, bytes]] | None = None
    ) -> list[tuple[int, LogEntry]]:
        """Up to *limit* log entries after seq *after*, in order, up to the first one
        that cannot be read into something the core takes (a damaged page, a format
        this version does not know). When that is the very first, the run of such
        entries from there (at most *limit*) goes into *unreadable* (seq, raw bytes)
        instead, and nothing is returned: ``_quarantine`` sets it aside."""
        out: list[tuple[int, LogEntry]] = []
        with self.index.env.begin(db=self.index.scanlog) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(u64(after + 1)):
                return out
            bad = 0
            for key, value in cursor:
                (seq,) = U64.unpack(key)
                entry = _readable(value)
                if entry is None:
                    if out or unreadable is None:
                        break  # the readable ones first; this one next round
                    unreadable.append((seq, bytes(value)))
                    bad += 1
                    if bad >= limit:
                        break
                    continue
                if bad:
                    break  # the end of the unreadable run
                out.append((seq, entry))
                if len(out) >= limit:
                    break
        return out

    async def _quarantine(self, unreadable: list[tuple[int, bytes]]) -> None:
        """Keep a run of unreadable log entries at the head of the outbox as they were,
        under ``quarantine:<seq>`` in meta, and move the upload cursor past them, in one
        commit: each is set aside once, and nothing readable is passed over."""
        first, last = unreadable[0][0], unreadable[-1][0]
        index = self.index
        rows = [(QUARANTINE_PREFIX + u64(seq), raw) for seq, raw in unreadable]
        cursor_raw = encoder.encode(last)

        def op(txn: Any, _committer: GroupCommitter) -> None:
            for key, raw in rows:
                txn.put(key, raw, db=index.meta)
            txn.put(b"upload_cursor", cursor_raw, db=index.meta)

        await self.committer.submit(op)
        log.error("%d unreadable scan log entries (seq %d to %d) kept in quarantine, "
                  "not uploaded", len(rows), first, last)

    async def _release_quarantine(self) -> None:
        """Quarantined entries this version can read (they were written by a newer
        one, since installed here) go up now, and leave quarantine; the others stay.
        Run once per start, before the outbox."""
        readable = [
            (U64.unpack(key[len(QUARANTINE_PREFIX):])[0], entry)
            for key, raw in self.index.meta_prefixed(QUARANTINE_PREFIX)
            if (entry := _readable(raw)) is not None
        ]
        index = self.index
        for start in range(0, len(readable), UPLOAD_BATCH):
            chunk = readable[start:start + UPLOAD_BATCH]
            await self._send(chunk)
            keys = [QUARANTINE_PREFIX + u64(seq) for seq, _entry in chunk]

            def op(txn: Any, _committer: GroupCommitter, keys: list[bytes] = keys) -> None:
                for key in keys:
                    txn.delete(key, db=index.meta)

            await self.committer.submit(op)
            log.info("%d quarantined scan log entries are readable now: uploaded",
                     len(chunk))

    async def _set_upload_cursor(self, seq: int) -> None:
        # Not a barrier: the cursor commutes with scans. A crash before it is stored
        # sends those scans again, and the core keeps one per scan_id.
        await self.committer.submit_deferred(
            self._put_meta((b"upload_cursor", encoder.encode(seq))))

    async def _upload(self) -> None:
        backoff = Backoff()
        unexpected = _Unexpected("scan upload")
        while True:
            unreadable: list[tuple[int, bytes]] = []
            try:
                if not self._quarantine_checked:
                    await self._release_quarantine()
                    self._quarantine_checked = True
                async with self._outbox:
                    entries = self.read_outbox(self.upload_cursor(), UPLOAD_BATCH, unreadable)
                    if unreadable:
                        await self._quarantine(unreadable)
                        continue
                    if entries:
                        # The scans go up again after a crash before this cursor is
                        # stored: idempotent by scan_id.
                        await self._set_upload_cursor(await self._send(entries))
                if not entries:
                    self._wake_upload.clear()
                    await sleep_or(self._wake_upload, IDLE_UPLOAD_CHECK_S)
                    await asyncio.sleep(UPLOAD_COALESCE_S)
                    continue
            except CoreRefused as exc:
                self.up.failed(time.time(), str(exc))
                log.warning("scan upload refused: %s", exc)
                await asyncio.sleep(REFUSED_RETRY_S)
                continue
            except RETRYABLE as exc:
                self.up.failed(time.time(), str(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            except CommitFailed as exc:  # quarantining, or the cursor: read them again
                self.up.failed(time.time(), f"commit failed: {exc}")
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # a bug must not end uploading silently
                self.up.failed(time.time(), f"internal error: {exc!r}")
                await asyncio.sleep(unexpected.failed(exc))
                continue
            backoff.reset()
            unexpected.reset()
            self.up.ok(time.time())

    async def _send(self, entries: list[tuple[int, LogEntry]]) -> int:
        """Send entries in order; return the last seq the core acknowledged."""
        scans: list[ScanItem] = []
        last = entries[0][0] - 1
        for seq, entry in entries:
            if entry.kind == "quick_cancel":
                if scans:
                    await self._send_scans(scans)
                    scans = []
                # Only what the node cancelled goes to the core: a quick cancel it refused
                # (sold, used, forged...) must not cancel anything there either.
                if entry.code and entry.result == "accepted":
                    undo = False
                    try:
                        answer = await self.client.quick_cancel(
                            QuickCancelRequest(entry.scan_id, entry.code), self.verify
                        )
                        if answer.result != "accepted":
                            self._refused(f"quick_cancel_{answer.reason}")
                            # Cancelled at the core already: the two agree.
                            undo = answer.reason != "cancelled"
                    except CoreRefused as exc:
                        if exc.status not in ITEM_REFUSED:
                            raise
                        # Unsigned, and the core never looked at the ticket: no undo.
                        self._refused(f"quick_cancel_{exc.status}")
                        log.warning("core refused quick cancel %s: %s", entry.scan_id, exc)
                    await self._settle_quick_cancel(seq, entry.ticket, undo=undo)
                last = seq
                continue
            scans.append(_item(entry))
            last = seq
        if scans:
            await self._send_scans(scans)
        return last

    async def _settle_quick_cancel(self, seq: int, ident: int, *, undo: bool) -> None:
        """The core has answered the quick cancel logged at *seq*. If it refused (the
        ticket was sold there meanwhile, say), put the record back as it was, unless the
        feed has already replaced this node's cancelled version: else the holder would be
        refused here alone, for as long as the core does not change the record again."""
        key = QUICK_CANCEL_BEFORE + u64(seq)
        index = self.index

        def op(txn: Any, _committer: GroupCommitter) -> None:
            before_raw = txn.get(key, db=index.meta)
            if before_raw is None:
                return
            txn.delete(key, db=index.meta)
            if not undo:
                return
            current_raw = txn.get(u64(ident), db=index.records)
            if current_raw is None:
                return
            try:  # this runs in a shared commit: a bad record must not fail the scans
                before = record_decoder.decode(before_raw)
                current = record_decoder.decode(current_raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.exception("quick cancel of ticket %d: stored record unreadable", ident)
                return
            if current == msgspec.structs.replace(before, status=Status.CANCELLED):
                txn.put(u64(ident), before_raw, db=index.records)
                log.warning("core refused quick cancel of ticket %d: put back", ident)

        try:
            await self.committer.submit(op)
        except CommitFailed as exc:  # the quick cancel goes up again; the core answers alike
            raise CoreUnavailable(f"settling a quick cancel failed: {exc}") from exc

    async def _send_scans(self, items: list[ScanItem]) -> None:
        result = await self.client.upload(ScanUpload(self.node_id, items), self.verify)
        for ack in result.acks:
            if ack.status == "refused":
                self._refused(ack.reason or "refused")
                log.warning("core refused scan %s: %s", ack.scan_id, ack.reason)
        self.uploaded += len(items)

    def _refused(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def _merge_time(item: ScanItem) -> float:
    """When another node's scan happened, for ``sync.rules.merge``: when that node
    logged it, on its clock; for a handheld's offline scan, which reaches its node
    late, the handheld's time when earlier (never later: a clock ahead)."""
    return min(item.scanned_at, item.logged_at) if item.offline else item.logged_at


def _item(entry: LogEntry) -> ScanItem:
    return ScanItem(
        entry.scan_id, entry.ticket, "accepted" if entry.result == "accepted" else "rejected",
        Reason(entry.reason), entry.direction, entry.gate, Mode(entry.mode or Mode.SINGLE),
        entry.date, entry.scanned_at, entry.logged_at, entry.offline,
    )


def _readable(raw: bytes) -> LogEntry | None:
    """The log entry in *raw* if the core would take it, else None: it decodes, its
    kind is one the core knows and so are its reason and mode. (Length limits of ids
    and names were checked when the scan was logged; a convert through ``ScanItem``
    would cost 2 us an entry, on the loop, at every upload.)"""
    try:
        entry = log_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if entry.kind == "scan":
        if entry.reason not in _VALID_REASONS or (entry.mode or Mode.SINGLE) not in _VALID_MODES:
            return None
    elif entry.kind != "quick_cancel":
        return None
    return entry


class _Unexpected:
    """Pacing and logging of a sync loop's unexpected errors: the wait doubles from
    ``UNEXPECTED_RETRY_S`` to ``UNEXPECTED_RETRY_CAP_S``; the traceback is logged when
    the error changes, one line when it repeats."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = UNEXPECTED_RETRY_S
        self.last = ""

    def failed(self, exc: Exception) -> float:
        """Log *exc* (call from its ``except`` block); returns how long to wait."""
        text = repr(exc)
        if text != self.last:
            log.exception("%s failed", self.what)
        else:
            log.warning("%s failed again: %s", self.what, text)
        self.last = text
        delay, self.delay = self.delay, min(self.delay * 2, UNEXPECTED_RETRY_CAP_S)
        return delay

    def reset(self) -> None:
        self.delay = UNEXPECTED_RETRY_S
        self.last = ""


def _log_failure(fut: asyncio.Future[None]) -> None:
    """A deferred cursor write no one waits for: its failure is logged (the next one,
    or a restart that polls those changes again, makes up for it)."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.warning("storing the feed cursor failed: %s", exc)
