"""ScanService: the one place where I/O and the scan decision meet.

One scan (see ARCHITECTURE.md) joins the batch of its loop round; per scan of the batch,
in order: remembered answer by scan_id → find the record (digest lookup, or signature
check for signed codes the index does not know) → prior state (pending overlay first) →
``decide`` → reserve the new state in the overlay; then one group commit for the batch →
answers. Deciding a batch has no ``await``, so two scans of one ticket always see each
other. Per batch rather than per scan: one read transaction, one write, one future.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec

from edge.decision import decide
from edge.index import REPLAY_KEY, Index, encoder, record_decoder, state_decoder, u64
from edge.journal import JournalRow
from edge.metrics import Counters, RateMeter
from edge.model import (
    Decision,
    Direction,
    GateProfile,
    GateView,
    Result,
    ScanRequest,
    TicketInfo,
)
from edge.scanlog import (
    Commit,
    CommitFailed,
    GroupCommitter,
    LogEntry,
    QuickCancelAnswer,
    ScanWrites,
    StoredAnswer,
    answer_decoder,
    log_encoder,
)
from sync.codes import (
    MAX_CODE_CHARS,
    Claims,
    KeyRing,
    Kind,
    ParsedCode,
    code_digest,
    is_signed_text,
    normalize,
    parse,
    verify,
)
from sync.rules import EMPTY_STATE, Reason, ScanState, entry_if_auto
from sync.snapshot import Catalog, Channel, Date, PassProduct, Record, Status

log = logging.getLogger(__name__)

MAX_SCAN_ID_CHARS: Final = 128
MAX_GATE_CHARS: Final = 64
MAX_GATES: Final = 1024
"""Gate profiles a node keeps (a profile serves every lane that scans under its name)."""
MAX_GATE_IDS: Final = 4096
"""Dates, events or zones one profile may list (after duplicates are dropped)."""
MAX_VERIFIED_CACHE: Final = 65536
MAX_FUTURE_SKEW_S: Final = 300.0
"""A device clock may run ahead of the node's by this much; later times are clamped."""
QUICK_CANCEL_PREFIX: Final = b"qc\x00"
MAX_SCAN_ID_BYTES: Final = 511 - len(QUICK_CANCEL_PREFIX)
"""A scan_id is a key of the ``answers`` db (after ``QUICK_CANCEL_PREFIX`` for a quick
cancel): LMDB refuses keys over 511 bytes, and 128 characters may take 512 in UTF-8."""
QUICK_CANCEL_SOLD: Final = "sold"
QUICK_CANCEL_BEFORE: Final = b"qc_before:"
"""Meta key prefix (+ the log entry's seq): a quick-cancelled record as it was before,
kept until the core has answered that quick cancel; if the core refuses it (sold there
meanwhile, say), the record is put back (``Follower._settle_quick_cancel``)."""

_profile_decoder: Final = msgspec.msgpack.Decoder(GateProfile)
_quick_decoder: Final = msgspec.msgpack.Decoder(QuickCancelAnswer)


class EdgeError(Exception):
    """Root of the edge node's errors.

    EdgeError
    ├── UnknownGate      the scan names a gate with no profile (4xx)
    ├── InvalidGate      a gate profile names dates/events/zones the node does not know
    ├── Resyncing        a quick cancel while a snapshot import or its replay runs (503)
    └── edge.scanlog.CommitFailed (separate root: the disk failed; client retries)
    """


class UnknownGate(EdgeError):
    pass


class Resyncing(EdgeError):
    """A quick cancel decided on the index a snapshot import is replacing would be
    written after that import, over the snapshot's newer record (sold meanwhile, say);
    one decided after the import but before the admissions the snapshot lacks are
    replayed would cancel stock used at another node. Refused until both are stored:
    seconds while the core is reachable; the technician retries."""


class InvalidGate(EdgeError):
    pass


class Unverified:
    """Marker for a signed code whose signature failed or whose key is unusable."""


_FORGED: Final = Unverified()


class _Slot:
    """One scan waiting in a decision batch; ``answer`` is set when it is decided."""

    __slots__ = ("answer", "error", "gate", "offline", "req", "sid")

    def __init__(
        self, req: ScanRequest, sid: bytes, gate: GateView | None, offline: bool
    ) -> None:
        self.req = req
        self.sid = sid
        self.gate = gate
        self.offline = offline
        self.answer: StoredAnswer | None = None
        self.error: Exception | None = None


class _Row(NamedTuple):
    """A decided scan on its way to the log."""

    sid: bytes
    answer: StoredAnswer
    ident: int
    new_state: ScanState | None
    generation: int
    """Of its reservation in ``pending_state`` (0: none)."""
    stored: JournalRow
    """What the writer stores for it, encoded once."""


class _Batch:
    """The scans that arrived in one round of the event loop, decided together and
    committed together; ``done`` resolves once their log entries are on disk."""

    __slots__ = ("done", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = Commit(loop=loop)
        self.slots: list[_Slot] = []


def _check_key(sid: bytes) -> None:
    """A scan_id the index cannot take as a key must never be answered: journaled, it
    would fail every later store (the API refuses it first, with a 400)."""
    if not 0 < len(sid) <= MAX_SCAN_ID_BYTES + len(QUICK_CANCEL_PREFIX):
        raise ValueError(f"scan_id of {len(sid)} bytes: 1 to {MAX_SCAN_ID_BYTES} allowed")


def day_of(start: float) -> int:
    return datetime.fromtimestamp(start, UTC).date().toordinal()


class ScanService:
    """Decides scans against the index; every write goes through the group committer."""

    def __init__(
        self,
        index: Index,
        committer: GroupCommitter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.env = index.env
        self.committer = committer
        self.clock = clock
        self.pending_state: dict[int, tuple[ScanState, int]] = {}
        self.pending_records: dict[int, Record] = {}
        self.pending_answers: dict[bytes, tuple[asyncio.Future[None], StoredAnswer]] = {}
        """Scans decided but not committed yet: a retry of one waits for the same commit."""
        self.unapplied_state: dict[int, ScanState] = {}
        self.unapplied_answers: dict[bytes, StoredAnswer] = {}
        """States and answers of scans on disk (in the journal) but not in the index yet:
        a failed commit never drops them (``drop_overlays``), the applier's hand-back
        does (``_applied``)."""
        self.pending_quick: dict[bytes, tuple[asyncio.Future[None], QuickCancelAnswer]] = {}
        self._batch: _Batch | None = None
        """The decision batch scans join until its callback runs (``scan``)."""
        self._generation = 0
        self._verified: dict[bytes, Claims | Unverified | None] = {}
        self.cursor_ahead = 0
        """A change-feed position past the stored one, reached by changes that needed no
        write (``cursor``); its own write waits for the applier."""
        self.counters = Counters()
        self.rate = RateMeter()
        self.profiles: dict[str, GateProfile] = {}
        self.gates: dict[str, GateView] = {}
        self.dates: dict[int, Date] = {}
        self.products: dict[int, PassProduct] = {}
        self.keyring = KeyRing()
        self.importing = 0
        """Snapshot imports queued or being written (``Follower.bootstrap``)."""
        self._any_revoked = False
        self.catalog = Catalog()
        committer.on_failure.append(self.drop_overlays)
        committer.on_durable.append(self._durable)
        committer.on_applied.append(self._applied)
        self.reload()

    # -- catalogue and gates ---------------------------------------------------------

    def cursor(self) -> int:
        """Change-feed position the index is consistent with: the stored one, or past
        it, changes that needed no write (``Follower._skip_to``)."""
        return max(self.index.meta_int("cursor"), self.cursor_ahead)

    def reload(self) -> None:
        """(Re)load the catalogue and gate profiles from the index."""
        catalog = self.index.catalog()
        self.catalog = catalog
        self.dates = {
            d.id: d if d.day else Date(d.id, d.event, d.start, d.end, d.doors_open, day_of(d.start))
            for d in catalog.dates
        }
        self.products = {p.id: p for p in catalog.products}
        revoked = {k.id for k in catalog.keys if k.revoked}
        self.keyring = KeyRing.from_raw({k.id: k.public for k in catalog.keys}, revoked)
        self._any_revoked = bool(revoked)
        self._verified.clear()
        self.profiles = {
            key[5:]: _profile_decoder.decode(raw) for key, raw in self.index.meta_items("gate:")
        }
        self.gates = {}
        for name, profile in self.profiles.items():
            try:
                self.gates[name] = self.resolve_gate(name, profile)
            except InvalidGate:
                continue

    def resolve_gate(self, name: str, profile: GateProfile) -> GateView:
        if profile.dates is None and profile.events is None:
            dates = dict(self.dates)
        else:
            dates = {}
            for date_id in profile.dates or ():
                if date_id not in self.dates:
                    raise InvalidGate(f"unknown date {date_id}")
                dates[date_id] = self.dates[date_id]
            event_ids = set(profile.events or ())
            known_events = {e.id for e in self.catalog.events} | {
                d.event for d in self.dates.values()
            }
            missing = event_ids - known_events
            if missing:
                raise InvalidGate(f"unknown event {min(missing)}")
            for d in self.dates.values():
                if d.event in event_ids:
                    dates[d.id] = d
        zones = frozenset(profile.zones or ())
        known_zones = {z.id for z in self.catalog.zones}
        if zones - known_zones:
            raise InvalidGate(f"unknown zone {min(zones - known_zones)}")
        return GateView(name, profile.mode, dates, zones)

    async def put_gate(
        self, name: str, profile: GateProfile, *, strict: bool = True
    ) -> GateProfile:
        """Store a gate profile (its lists without duplicates, sorted); returns it as
        stored. Not *strict*: keep it even if the catalogue does not know its dates yet
        (a node still waiting for its first snapshot); it resolves later. Was: kept as
        sent, so a list of one id repeated 262,000 times cost 2 MB of memory per gate,
        and ``GET /api/v1/gates`` of 40 such gates stalled the loop for 180 ms."""
        lists = [sorted(set(ids)) if ids is not None else None
                 for ids in (profile.dates, profile.events, profile.zones)]
        if any(ids is not None and len(ids) > MAX_GATE_IDS for ids in lists):
            raise InvalidGate(f"a gate lists at most {MAX_GATE_IDS} dates, events or zones")
        profile = GateProfile(profile.mode, *lists)
        if name not in self.profiles and len(self.profiles) >= MAX_GATES:
            raise InvalidGate(f"a node keeps at most {MAX_GATES} gate profiles")
        if strict:
            self.resolve_gate(name, profile)  # InvalidGate: refused, nothing stored
        raw = encoder.encode(profile)
        key = f"gate:{name}".encode()

        def op(txn: Any, _c: GroupCommitter) -> None:
            txn.put(key, raw, db=self.index.meta)

        await self.committer.submit(op)
        self.profiles[name] = profile
        # Resolved once stored: a catalogue change stored while this write waited (the
        # follower's ``reload``) must not be undone by a view of the older catalogue;
        # that gate refused every date the change added (``wrong_date``) until the
        # next change. A profile that does not resolve (yet) leaves no view, as
        # ``reload`` leaves it: not the view of the profile it replaced.
        try:
            self.gates[name] = self.resolve_gate(name, profile)
        except InvalidGate:
            self.gates.pop(name, None)
        return profile

    # -- lookup ----------------------------------------------------------------------

    def _find(self, txn: Any, code: str) -> Record | Reason:
        if not code or len(code) > MAX_CODE_CHARS or not code.isprintable():
            return Reason.MALFORMED
        digest = code_digest(code)
        signed = is_signed_text(code)
        key = txn.get(digest, db=self.index.codes)
        if key is not None:
            if signed and self._any_revoked:
                parsed = parse(code)
                if isinstance(parsed, ParsedCode) and self.keyring.is_revoked(
                    parsed.claims.key_id
                ):
                    return Reason.FORGED
            return self._record(txn, key, code, digest)
        if not signed:
            key = txn.get(digest, db=self.index.media)
            if key is None:
                return Reason.UNKNOWN
            return self._record(txn, key, code, digest)
        claims = self._verify(code, digest)
        if claims is None:
            return Reason.MALFORMED
        if claims is _FORGED:
            return Reason.FORGED
        assert isinstance(claims, Claims)
        key = u64(claims.id)
        known = self.pending_records.get(claims.id)
        if known is not None and known.code_digest == digest:
            return known
        if txn.get(key, db=self.index.records) is not None:
            # The ticket exists with another code: this one was replaced (reissued after
            # a loss, a transfer or a key revocation) and no longer admits anyone.
            return Reason.CANCELLED
        # Validly signed, issued after the last sync: the signature is the authority.
        return Record(
            claims.id, claims.kind, Status.VALID, claims.event, claims.date, claims.zone, digest
        )

    def _record(self, txn: Any, key: bytes, code: str, digest: bytes) -> Record | Reason:
        """The record the index maps *code* (whose digest is *digest*) to. A version
        still waiting for the writer (a feed change, a quick cancel) counts, if it still
        carries that code or media id: else the code is what the index will say once
        that version is stored, replaced (signed codes) or unknown."""
        ident = int.from_bytes(key, "big")
        pending = self.pending_records.get(ident)
        if pending is not None:
            if pending.code_digest == digest or code in pending.media:
                return pending
            return Reason.CANCELLED if is_signed_text(code) else Reason.UNKNOWN
        raw = txn.get(key, db=self.index.records)
        if raw is None:
            return Reason.UNKNOWN
        return record_decoder.decode(raw)

    def _verify(self, code: str, digest: bytes) -> Claims | Unverified | None:
        """Claims of a signed code, ``_FORGED``, or None when malformed. Cached."""
        cache = self._verified
        if digest in cache:
            return cache[digest]
        parsed = parse(code)
        result: Claims | Unverified | None
        if not isinstance(parsed, ParsedCode):
            result = None
        else:
            self.counters.signature_checks += 1
            result = parsed.claims if verify(parsed, self.keyring) else _FORGED
        if len(cache) >= MAX_VERIFIED_CACHE:
            for old in list(cache)[: MAX_VERIFIED_CACHE // 2]:
                del cache[old]
        cache[digest] = result
        return result

    def reserve_state(self, ident: int, state: ScanState) -> int:
        """Put *state* in the pending overlay until its commit; returns the generation."""
        self._generation += 1
        self.pending_state[ident] = (state, self._generation)
        return self._generation

    def release_state(self, ident: int, generation: int) -> None:
        """Drop the overlay entry once committed, unless a later reservation replaced it."""
        if self.pending_state.get(ident, (None, 0))[1] == generation:
            del self.pending_state[ident]

    def reserve_records(self, records: dict[int, Record]) -> None:
        """Put record versions waiting for the writer (a feed batch, a quick cancel) in
        the pending overlay: decisions count them from now (see ``_record``)."""
        self.pending_records.update(records)

    def release_records(self, records: dict[int, Record]) -> None:
        """Drop them once committed (or failed), unless a later version replaced them."""
        pending = self.pending_records
        for ident, record in records.items():
            if pending.get(ident) is record:
                del pending[ident]

    def drop_overlays(self) -> None:
        """A commit failed: every write not committed yet fails with it, unwritten
        (``GroupCommitter._done``). Forget all they reserved; what the overlays held
        for writes already committed is in the index, or in the unapplied overlays
        until the applier has stored it there, where the next read finds it.
        The waiting requests still get their 503 when their own writes fail; a retry
        meanwhile is decided afresh, on the index."""
        self.pending_state.clear()
        self.pending_records.clear()
        self.pending_answers.clear()
        self.pending_quick.clear()

    def state_in(self, txn: Any, ident: int) -> ScanState:
        """A ticket's scan state as the next decision must see it: the pending overlay
        (decided, not committed yet) first, then the index, read in *txn*."""
        pending = self.pending_state.get(ident)
        if pending is not None:
            return pending[0]
        stored = self.unapplied_state.get(ident)
        if stored is not None:
            return stored
        raw = txn.get(u64(ident), db=self.index.state)
        return state_decoder.decode(raw) if raw else EMPTY_STATE

    def state_of(self, ident: int) -> ScanState:
        """A ticket's scan state as the next decision would see it."""
        with self.env.begin(db=self.index.state) as txn:
            return self.state_in(txn, ident)

    def _durable(self, writes: ScanWrites) -> None:
        """Scans are on disk: their states and answers move to the unapplied overlays
        (``GroupCommitter.on_durable``, before their waiters wake)."""
        rows: list[_Row] = writes.tag
        pending = self.pending_answers
        for row in rows:
            held = pending.get(row.sid)
            if held is not None and held[1] is row.answer:
                del pending[row.sid]
            self.unapplied_answers[row.sid] = row.answer
            if row.new_state is not None:
                self.unapplied_state[row.ident] = row.new_state
                self.release_state(row.ident, row.generation)

    def _applied(self, writes: ScanWrites) -> None:
        """Scans are in the index: what the unapplied overlays held for them goes,
        unless a later scan replaced it."""
        rows: list[_Row] = writes.tag
        answers = self.unapplied_answers
        states = self.unapplied_state
        for row in rows:
            if answers.get(row.sid) is row.answer:
                del answers[row.sid]
            if row.new_state is not None and states.get(row.ident) is row.new_state:
                del states[row.ident]

    # -- scans -----------------------------------------------------------------------

    async def scan(self, req: ScanRequest, *, offline: bool = False) -> StoredAnswer:
        """Decide, log durably, and answer one scan. The same scan_id, the same answer.

        The scan joins the batch of everything that arrived in this round of the event
        loop: one callback decides them all in arrival order in one read transaction,
        then one logged write carries them to the group committer (see ``_decide``).
        """
        sid = req.scan_id.encode()
        _check_key(sid)
        waiting = self.pending_answers.get(sid)
        if waiting is not None:
            await asyncio.shield(waiting[0])
            return waiting[1]
        stored = self.unapplied_answers.get(sid)
        if stored is not None:
            return stored
        # An unknown gate is refused in ``_decide``, after the remembered answer: a retry
        # of an answered scan gets its first answer whatever it names.
        gate = self.gates.get(req.gate)
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self.committer.loop)
            self.committer.loop.call_soon(self._decide, batch)
        slot = _Slot(req, sid, gate, offline)
        batch.slots.append(slot)
        await batch.done
        if slot.error is not None:
            raise slot.error
        answer = slot.answer
        assert answer is not None
        return answer

    def _decide(self, batch: _Batch) -> None:
        """Decide every scan of *batch* in order, reserve their states in the pending
        overlay, and queue their log entries, states and answers as one write."""
        if self._batch is batch:
            self._batch = None
        now = self.clock()
        rows: list[_Row] = []
        pending = self.pending_answers
        unapplied = self.unapplied_answers
        try:
            with self.env.begin() as txn:
                for slot in batch.slots:
                    sid = slot.sid
                    waiting = pending.get(sid)
                    if waiting is not None:
                        # The same scan_id earlier in this batch (a retry of one in an
                        # earlier batch waits in ``scan`` and never gets here).
                        slot.answer = waiting[1]
                        continue
                    stored = unapplied.get(sid)
                    if stored is not None:  # stored while this batch gathered
                        slot.answer = stored
                        continue
                    try:
                        remembered = txn.get(sid, db=self.index.answers)
                        if remembered is not None:
                            slot.answer = answer_decoder.decode(remembered)
                            continue
                        if slot.gate is None:
                            slot.error = UnknownGate(slot.req.gate)
                            continue
                        row = self._decide_one(txn, slot, now)
                    except Exception as exc:  # a bug or bad data: this scan fails alone
                        log.exception("scan %r failed", slot.req.scan_id)
                        # Without its traceback: that holds this frame and so ``txn``,
                        # whose reader slot must be freed before the commit wait.
                        slot.error = exc.with_traceback(None)
                        continue
                    rows.append(row)
                    pending[sid] = (batch.done, row.answer)
        except Exception as exc:  # the index failed: nothing of the batch is decided
            log.exception("deciding a batch of %d scans failed", len(batch.slots))
            self._settle(batch, rows, now, exc)
            return
        # A finished read transaction keeps its LMDB reader slot (126 in all) until it is
        # freed: never let this frame hold one across the commit wait.
        del txn
        if not rows:
            batch.done.set_result(None)
            return
        committed = self._log_scans(rows)
        committed.add_done_callback(
            lambda fut: self._settle(batch, rows, now, fut.exception())
        )

    def _decide_one(
        self,
        txn: Any,
        slot: _Slot,
        now: float,
    ) -> _Row:
        req = slot.req
        gate = slot.gate
        assert gate is not None  # checked by ``_decide``
        at = now
        if req.scanned_at is not None and slot.offline:
            at = min(req.scanned_at, now + MAX_FUTURE_SKEW_S)
        found = self._find(txn, normalize(req.code))
        ticket: TicketInfo | None = None
        entries: int | None = None
        ident = 0
        new_state: ScanState | None = None
        if isinstance(found, Reason):
            decision = Decision(Result.REJECTED, found, entry_if_auto(req.direction), None)
        else:
            record = found
            ident = record.id
            state = self.state_in(txn, ident)
            product = self.products.get(record.event) if record.kind else None
            decision = decide(record, state, gate, at, req.direction, product)
            date = self.dates.get(decision.date) if decision.date else None
            ticket = TicketInfo(
                ident,
                "pass" if record.kind else "ticket",
                date.event if date is not None else record.event,
                decision.date or record.date,
                record.zone,
                record.holder,
                record.order,
            )
            new_state = decision.new_state
            if at > now and new_state is not None:
                # A handheld's clock ahead (an offline scan): the state's time is the
                # node's, which ``merge`` judges other nodes' scans against.
                new_state = msgspec.structs.replace(new_state, last_at=max(state.last_at, now))
            entries = (new_state or state).entries
        answer = StoredAnswer(decision.result, decision.reason, decision.direction, ticket, entries)
        entry = LogEntry(
            req.scan_id, ident, decision.result, decision.reason, decision.direction,
            req.gate, gate.mode, decision.date, at, now, "scan", slot.offline,
        )
        stored = (slot.sid, log_encoder.encode(entry), encoder.encode(answer), ident,
                  encoder.encode(new_state) if new_state is not None else None)
        # Last, so that a failure above leaves nothing reserved.
        generation = self.reserve_state(ident, new_state) if new_state is not None else 0
        slot.answer = answer
        return _Row(slot.sid, answer, ident, new_state, generation, stored)

    def _settle(
        self,
        batch: _Batch,
        rows: list[_Row],
        now: float,
        error: BaseException | None,
    ) -> None:
        """After the batch's commit (or its failure): count the scans and wake the
        requests. Stored, their overlay entries have moved on already (``_durable``);
        failed, what the in-flight overlays still hold for them goes."""
        if error is not None:
            pending = self.pending_answers
            for row in rows:
                # Only its own entry: after a failed commit (``drop_overlays``) a retry
                # of this scan_id may have been decided anew and wait for its commit.
                held = pending.get(row.sid)
                if held is not None and held[0] is batch.done:
                    del pending[row.sid]
                if row.new_state is not None:
                    self.release_state(row.ident, row.generation)
        if batch.done.done():
            return
        if error is None:
            for row in rows:
                self._count(row.answer.reason, now)
            batch.done.set_result(None)
        else:
            batch.done.set_exception(
                error if isinstance(error, CommitFailed) else CommitFailed(str(error))
            )

    def _log_scans(self, rows: list[_Row]) -> asyncio.Future[None]:
        """Queue a batch of scans as one logged write: for each, the log entry, the
        remembered answer, and the new state when there is one."""
        writes = ScanWrites([row.stored for row in rows], rows)
        # This callback already gathered the round's scans: no need to wait for the
        # committer's own end-of-round hand-over.
        return self.committer.submit_scans(writes)

    def _log(
        self, sid: bytes, entry: LogEntry, answer_raw: bytes,
        cancel: tuple[int, bytes, bytes] | None,
    ) -> asyncio.Future[None]:
        """Queue one logged write (quick cancels): the log entry, the remembered answer,
        and for stock it cancels, *cancel* = (id, the cancelled record, the record as it
        was before, kept under ``QUICK_CANCEL_BEFORE``); all in one commit."""
        index = self.index

        def op(txn: Any, committer: GroupCommitter) -> None:
            seq = committer.append_log(txn, entry)
            if cancel is not None:
                ident, raw, before_raw = cancel
                txn.put(u64(ident), raw, db=index.records)
                txn.put(QUICK_CANCEL_BEFORE + u64(seq), before_raw, db=index.meta)
            txn.put(sid, answer_raw, db=index.answers)

        return self.committer.submit(op)

    def _count(self, reason: Reason, now: float) -> None:
        self.counters.count(reason)
        self.rate.tick(now)

    async def _answered_elsewhere(self, reqs: list[ScanRequest]) -> dict[int, StoredAnswer]:
        """The first answers of the scans of a batch that name a gate with no profile.
        Each must have been answered before (a retried batch gets its first answers
        back, as a retried scan does); else the batch decides nothing: ``UnknownGate``.
        Resolved before any scan of the batch is decided, and never decided again: an
        answer that vanished meanwhile (its commit failed) fails the whole batch."""
        unknown = [i for i, r in enumerate(reqs) if r.gate not in self.gates]
        if not unknown:
            return {}
        answers: dict[int, StoredAnswer] = {}
        waits: list[tuple[int, asyncio.Future[None], StoredAnswer]] = []
        with self.env.begin(db=self.index.answers) as txn:
            for i in unknown:
                sid = reqs[i].scan_id.encode()
                pending = self.pending_answers.get(sid)
                if pending is not None:
                    waits.append((i, pending[0], pending[1]))
                    continue
                stored = self.unapplied_answers.get(sid)
                if stored is not None:
                    answers[i] = stored
                    continue
                raw = txn.get(sid)
                if raw is None:
                    raise UnknownGate(reqs[i].gate)
                answers[i] = answer_decoder.decode(raw)
        for i, done, answer in waits:
            await asyncio.shield(done)  # CommitFailed if that scan was never stored
            answers[i] = answer
        return answers

    async def scan_batch(self, reqs: list[ScanRequest]) -> list[StoredAnswer]:
        """Offline scans: decided in scanned_at order (per ticket), answered in input order."""
        answered = await self._answered_elsewhere(reqs)
        now = self.clock()
        times = [now if r.scanned_at is None else r.scanned_at for r in reqs]
        order = sorted((i for i in range(len(reqs)) if i not in answered),
                       key=times.__getitem__)
        # Tasks start in creation order, so they join the decision batch in time order.
        tasks = {i: asyncio.ensure_future(self.scan(reqs[i], offline=True)) for i in order}
        decided = await asyncio.gather(*tasks.values())
        answered.update(zip(tasks, decided, strict=True))
        return [answered[i] for i in range(len(reqs))]

    # -- quick cancellation ----------------------------------------------------------

    async def quick_cancel(self, scan_id: str, code: str) -> QuickCancelAnswer:
        """Cancel unsold printed stock at once. Never an online customer's or used ticket.

        Refusals: ``malformed``/``forged``/``unknown`` (no such stock, or a card's media
        id rather than the printed code), ``cancelled`` (already), ``already_used``, and
        ``sold`` (sold to a customer, or a pass: not stock). The same rules as the core's
        (``core.stock.quick_cancel``), so the two never disagree on what was cancelled.
        """
        sid = QUICK_CANCEL_PREFIX + scan_id.encode()
        _check_key(sid)
        waiting = self.pending_quick.get(sid)
        if waiting is not None:
            await asyncio.shield(waiting[0])
            return waiting[1]
        now = self.clock()
        code = normalize(code)
        new_record: Record | None = None
        ident = 0
        with self.env.begin() as txn:
            remembered = txn.get(sid, db=self.index.answers)
            if remembered is not None:
                return _quick_decoder.decode(remembered)
            if self.importing:
                raise Resyncing("a new snapshot is being stored; retry in a few seconds")
            if txn.get(REPLAY_KEY, db=self.index.meta) is not None:
                # The snapshot has no scan state: until the admissions are loaded, stock
                # used at another node would look unused here.
                raise Resyncing("earlier admissions are still loading from the core; retry")
            found = self._find(txn, code)
            if isinstance(found, Reason):
                reason: str = found
            elif found.code_digest != code_digest(code):
                # A card's media id: the core cancels stock by its printed code only and
                # would refuse this, leaving the two disagreeing (cancelled only here).
                reason = Reason.UNKNOWN
            else:
                ident = found.id
                if found.status == Status.CANCELLED:
                    reason = Reason.CANCELLED
                elif self.state_in(txn, ident).entries:
                    reason = Reason.ALREADY_USED
                elif found.sold or found.channel == Channel.ONLINE or found.kind != Kind.TICKET:
                    # A pass is never stock to the core either (``core.stock``).
                    reason = QUICK_CANCEL_SOLD
                else:
                    reason = Reason.OK
                    new_record = msgspec.structs.replace(found, status=Status.CANCELLED)
        del txn  # frees its reader slot before the commit wait (see ``scan``)
        result = Result.ACCEPTED if new_record is not None else Result.REJECTED
        answer = QuickCancelAnswer(result, reason)
        entry = LogEntry(scan_id, ident, result, reason, Direction.ENTRY, "", "",
                         0, now, now, "quick_cancel", False, code)
        reserved: dict[int, Record] = {}
        cancel = None
        if new_record is not None:
            reserved[ident] = new_record
            cancel = (ident, encoder.encode(new_record), encoder.encode(found))
        self.reserve_records(reserved)
        committed = self._log(sid, entry, encoder.encode(answer), cancel)
        self.pending_quick[sid] = (committed, answer)
        try:
            await committed
        finally:
            if self.pending_quick.get(sid, (None,))[0] is committed:
                del self.pending_quick[sid]  # not a retry's, after ``drop_overlays``
            self.release_records(reserved)
        self.counters.quick_cancels += result is Result.ACCEPTED
        return answer
