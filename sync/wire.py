"""What crosses between core and edge besides the snapshot: the change feed and scan upload.

Pure: msgspec only. Every struct is lenient (unknown fields are ignored) and may only gain
fields with defaults, so old and new nodes interoperate. Bodies are JSON
(``application/json``) or msgpack (``application/msgpack``); the core answers in the
type the request's ``Accept`` header names, JSON by default.

Change feed, ``GET /api/v1/venues/{venue}/changes?after=CURSOR&wait=SECONDS``::

    ChangeBatch(cursor, changes=[Change, ...], more)

``Change`` is a tagged union (``type`` field):

- ``RecordChanged(seq, record)``: a ticket or pass was issued, cancelled, paid, updated
  (pass update, card attached): ``record`` is its full current ``sync.snapshot.Record``.
- ``CatalogChanged(seq, catalog)``: events, dates, zones, pass products or keys changed
  (date moved, key rotated or revoked): the venue's full current ``Catalog``.
- ``Resync(seq, reason)``: the cursor cannot be served (ahead of the core, or the venue
  was reset); fetch a new snapshot.
- ``ScanAdmitted(seq, node, item)``: a scan some node of the venue uploaded that changed a
  ticket's presence or use (``accepted``), so every other node applies it to its own scan
  state through ``sync.rules.step`` and single-entry and entry/exit rules hold across
  nodes. A node skips the ones it sent itself.

A record may appear more than once between two cursors; only its last state matters.
Apply changes in order, then store ``cursor``. ``more`` says another batch is ready now;
``head`` is the venue's latest sequence when the batch was read (``head - cursor`` is how
far behind the node is).

A sequence number alone does not name a change: a core restored from a backup numbers
its new changes from the backup's head again, and once it is past a node's cursor that
cursor means another history. Each change has a ``tag``, a digest of what it was and
when; a batch carries the tag of its ``cursor`` and of the request's ``after`` (the
snapshot header, of its cursor). A node keeps the tag of its cursor: when the core's
``after_tag`` differs, the history it followed is gone, and it resyncs (see
``edge.follower``).

Every answer of these routes is signed (header ``X-Gatekeeper-Signature``; see
``sync.codes.verify_feed`` and its domains); the snapshot is checked by its signed digest.

Scan upload, ``POST /api/v1/venues/{venue}/scans``: ``ScanUpload(node, items)``, answered
with ``UploadResult(acks)``, one ``Ack`` per item in order. ``stored`` and ``duplicate``
(same ``scan_id`` seen before) are both final; ``refused`` is final too and carries why
(e.g. the ticket is not one of this venue's). Only transport errors and 5xx are retried.

Quick cancel, ``POST /api/v1/venues/{venue}/quick-cancel``: ``QuickCancelRequest`` ->
``QuickCancelAnswer``; idempotent by ``scan_id``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from sync.rules import Direction, Mode, Reason
from sync.snapshot import Catalog, Record

MAX_UPLOAD_ITEMS: Final = 5000
"""Most scans one ``ScanUpload`` may carry."""
MAX_SCAN_ID_CHARS: Final = 128
MAX_NAME_CHARS: Final = 128
MAX_WAIT_S: Final = 30.0
"""Longest long-poll the core holds a changes request open."""

ScanId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SCAN_ID_CHARS)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]


class RecordChanged(msgspec.Struct, frozen=True, tag="record_changed"):
    seq: int
    record: Record


class CatalogChanged(msgspec.Struct, frozen=True, tag="catalog_changed"):
    seq: int
    catalog: Catalog


class Resync(msgspec.Struct, frozen=True, tag="resync"):
    seq: int
    reason: str = ""


ScanResult = Literal["accepted", "rejected"]


class ScanItem(msgspec.Struct, frozen=True):
    """One scan from a node's scan log, as decided there."""

    scan_id: ScanId
    ticket: int
    """Ticket or pass id; 0 when the code matched nothing (malformed, forged, unknown)."""
    result: ScanResult
    reason: Reason
    direction: Direction
    """As resolved by the node (``entry`` or ``exit``)."""
    gate: Name
    mode: Mode
    date: int
    """Date the scan was decided for; 0 when none applied."""
    scanned_at: float
    """Device time, POSIX seconds."""
    logged_at: float
    """Node time the scan entered its log."""
    offline: bool = False
    """Taken by a device while offline and sent to the node later in a batch: then
    ``scanned_at`` is the device's clock and ``logged_at`` when the batch arrived."""


class ScanAdmitted(msgspec.Struct, frozen=True, tag="scan_admitted"):
    seq: int
    node: str
    """Node that uploaded the scan."""
    item: ScanItem


Change = RecordChanged | CatalogChanged | Resync | ScanAdmitted


class ChangeBatch(msgspec.Struct, frozen=True):
    cursor: int
    changes: list[Change] = []
    more: bool = False
    head: int = 0
    """The venue's latest sequence number when the batch was read (0: not told)."""
    tag: str = ""
    """The tag of change ``cursor`` (see below; "": cursor 0, or not told)."""
    after_tag: str = ""
    """The tag of change ``after`` as this core has it ("": after 0, or not told)."""


class ScanUpload(msgspec.Struct, frozen=True):
    node: Name
    items: Annotated[list[ScanItem], msgspec.Meta(max_length=MAX_UPLOAD_ITEMS)]


AckStatus = Literal["stored", "duplicate", "refused"]


class Ack(msgspec.Struct, frozen=True, omit_defaults=True):
    scan_id: str
    status: AckStatus
    reason: str = ""


class UploadResult(msgspec.Struct, frozen=True):
    acks: list[Ack]


class QuickCancelRequest(msgspec.Struct, frozen=True):
    scan_id: ScanId
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


QuickCancelReason = Literal["ok", "unknown", "cancelled", "sold", "already_used"]


class QuickCancelAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """``accepted``/``ok``, or ``rejected`` with why: ``unknown`` code, already
    ``cancelled``, ``sold`` (a customer's ticket, never stock) or ``already_used``."""

    scan_id: str
    result: ScanResult
    reason: QuickCancelReason
    ticket: int = 0
