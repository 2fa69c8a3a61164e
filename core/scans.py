"""Scan ingestion from edge nodes, and each ticket's reconciled entries and conflicts.

Scans are stored once per (venue, ``scan_id``): a re-sent scan is acknowledged as a
``duplicate`` and changes nothing. A scan of a ticket id this venue does not know is
``refused`` (final). Scans of codes that matched nothing (ticket 0) are kept for audit.
Every other scan is stored as the node decided it, whatever the replay later says of it:
reconciliation reports, it never drops.

A newly stored scan that admitted a known ticket (``accepted``: ``ok`` or ``exit_ok``)
goes into the venue's change feed as ``ScanAdmitted`` in the same transaction, so the
venue's other nodes apply it to their own scan state.

Entries and conflicts are computed on read by ``sync.reconcile``, the same replay the
gates' rules define (``sync.rules.step``, in ``scanned_at`` order across nodes), so they
always reflect every scan uploaded so far: per ticket (``ticket_detail``) and per venue
for the organizer (``venue_conflicts``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from core import feed
from core.issuing import STATUS_NAMES, ticket_out, ticket_row
from core.models import MAX_ID
from sync.codes import Kind
from sync.reconcile import Reconciled, reconcile
from sync.rules import ADMITTING, NO_LIMITS, Limits
from sync.wire import Ack, ScanItem, ScanUpload, UploadResult

if TYPE_CHECKING:
    from core.store import Tx


def ingest(tx: Tx, venue: int, upload: ScanUpload) -> UploadResult:
    now = time.time()
    acks: list[Ack] = []
    for item in upload.items:
        if item.ticket < 0 or item.ticket > MAX_ID:
            acks.append(Ack(item.scan_id, "refused", "bad_ticket"))
            continue
        # Out of SQLite's integer range (a 500), or NaN (stored as NULL: the whole
        # upload would fail, and its retries too): refuse the one item.
        if not 0 <= item.date <= MAX_ID:
            acks.append(Ack(item.scan_id, "refused", "bad_date"))
            continue
        if not (math.isfinite(item.scanned_at) and math.isfinite(item.logged_at)):
            acks.append(Ack(item.scan_id, "refused", "bad_time"))
            continue
        if (
            item.ticket
            and tx.scalar("SELECT venue_id FROM tickets WHERE id = ?", (item.ticket,)) != venue
        ):
            acks.append(Ack(item.scan_id, "refused", "unknown_ticket"))
            continue
        stored = tx.exec(
            "INSERT INTO scans (venue_id, scan_id, node, ticket_id, result, reason, direction,"
            " gate, mode, date_id, scanned_at, logged_at, offline, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                venue,
                item.scan_id,
                upload.node,
                item.ticket,
                item.result,
                str(item.reason),
                str(item.direction),
                item.gate,
                str(item.mode),
                item.date,
                item.scanned_at,
                item.logged_at,
                int(item.offline),
                now,
            ),
        )
        if stored != 1:
            acks.append(Ack(item.scan_id, "duplicate"))
            continue
        if item.ticket and item.result == "accepted" and item.reason in ADMITTING:
            feed.scan_admitted(tx, venue, item.ticket, item.scan_id)
        acks.append(Ack(item.scan_id, "stored"))
    return UploadResult(acks)


def ticket_detail(tx: Tx, ticket_id: int) -> dict[str, Any]:
    """A ticket with its reconciled ``entries`` and ``conflicts`` across nodes."""
    row = ticket_row(tx, ticket_id)
    rows = tx.all(f"SELECT {feed.SCAN_COLUMNS} FROM scans WHERE ticket_id = ?", (ticket_id,))
    nodes = {str(r[0]): str(r[1]) for r in rows}
    scans = [feed.scan_of(r) for r in rows]
    dates = {
        int(d["id"]): (int(d["event_id"]), int(d["day"]))
        for d in tx.all(
            "SELECT DISTINCT d.id, d.event_id, d.day FROM dates d JOIN scans s"
            " ON s.date_id = d.id WHERE s.ticket_id = ?",
            (ticket_id,),
        )
    }
    limits = NO_LIMITS
    if row["kind"] == Kind.PASS:
        limits = _product_limits(tx, int(row["venue_id"])).get(int(row["event_id"]), NO_LIMITS)
    result = reconcile(scans, dates, limits)
    out: dict[str, Any] = {
        f: getattr(ticket_out(row), f) for f in ticket_out(row).__struct_fields__
    }
    out["entries"] = [_scan_out(s, nodes) for s in result.entries]
    out["conflicts"] = _conflicts_out(result, nodes)
    out["entry_count"] = result.entry_count
    out["scans"] = len(scans)
    return out


@dataclass(frozen=True, slots=True)
class VenueScans:
    """What ``venue_conflicts`` needs, read in one go: every accepted scan of a known
    ticket, by ticket, with the venue's dates and pass limits."""

    venue: int
    name: str
    scans: list[tuple[str, ScanItem]]
    """(node, scan), ordered by ticket."""
    dates: dict[int, tuple[int, int]]
    limits: dict[int, Limits]
    """Pass product id -> limits."""
    passes: dict[int, int]
    """Pass id -> product id, for passes that have accepted scans."""


def venue_scans(tx: Tx, venue: int) -> VenueScans:
    """Read a venue's admissions (DB thread); ``venue_conflicts`` replays them."""
    name = str(tx.scalar("SELECT name FROM venues WHERE id = ?", (venue,)) or "")
    rows = tx.all(
        f"SELECT {feed.SCAN_COLUMNS} FROM scans WHERE venue_id = ? AND ticket_id != 0"
        " AND result = 'accepted' ORDER BY ticket_id",
        (venue,),
    )
    dates = {
        int(d["id"]): (int(d["event_id"]), int(d["day"]))
        for d in tx.all(
            "SELECT d.id, d.event_id, d.day FROM dates d JOIN events e ON e.id = d.event_id"
            " WHERE e.venue_id = ?",
            (venue,),
        )
    }
    passes = {
        int(r["id"]): int(r["event_id"])
        for r in tx.all(
            "SELECT id, event_id FROM tickets WHERE venue_id = ? AND kind = ? AND id IN"
            " (SELECT ticket_id FROM scans WHERE venue_id = ? AND result = 'accepted')",
            (venue, int(Kind.PASS), venue),
        )
    }
    return VenueScans(
        venue,
        name,
        [(str(r[1]), feed.scan_of(r)) for r in rows],
        dates,
        _product_limits(tx, venue),
        passes,
    )


def replay_venue(scans: VenueScans) -> dict[int, tuple[Reconciled, dict[str, str]]]:
    """Replay every ticket's admissions (pure; run it off the DB thread): the tickets
    with conflicts, each with its replay and its scans' nodes."""
    found: dict[int, tuple[Reconciled, dict[str, str]]] = {}
    for ticket, group in groupby(scans.scans, key=lambda pair: pair[1].ticket):
        pairs = list(group)
        limits = NO_LIMITS
        product = scans.passes.get(ticket)
        if product is not None:
            limits = scans.limits.get(product, NO_LIMITS)
        result = reconcile([scan for _node, scan in pairs], scans.dates, limits)
        if result.conflicts:
            found[ticket] = (result, {scan.scan_id: node for node, scan in pairs})
    return found


def venue_conflicts(
    tx: Tx, scans: VenueScans, replayed: Mapping[int, tuple[Reconciled, dict[str, str]]]
) -> dict[str, Any]:
    """The organizer's list: every ticket of the venue admitted against its rule."""
    tickets = _ticket_rows(tx, sorted(replayed))
    items: list[dict[str, Any]] = []
    for ticket_id in sorted(replayed):
        result, nodes = replayed[ticket_id]
        row = tickets.get(ticket_id)
        items.append(
            {
                "ticket": ticket_id,
                "kind": "pass" if row is not None and row["kind"] == Kind.PASS else "ticket",
                "status": STATUS_NAMES.get(int(row["status"]), "") if row is not None else "",
                "event": int(row["event_id"]) if row is not None else 0,
                "date": int(row["date_id"]) if row is not None else 0,
                "order": str(row["order_number"]) if row is not None else "",
                "holder": str(row["holder"]) if row is not None else "",
                "entry_count": result.entry_count,
                "conflicts": _conflicts_out(result, nodes),
            }
        )
    return {
        "venue": scans.name,
        "tickets": len(items),
        "count": sum(len(result.conflicts) for result, _nodes in replayed.values()),
        "conflicts": items,
    }


def _ticket_rows(tx: Tx, ids: Sequence[int]) -> dict[int, Any]:
    found: dict[int, Any] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in tx.all(
            "SELECT id, kind, status, event_id, date_id, order_number, holder FROM tickets"
            f" WHERE id IN ({marks})",
            chunk,
        ):
            found[int(row["id"])] = row
    return found


def _product_limits(tx: Tx, venue: int) -> dict[int, Limits]:
    return {
        int(p["id"]): Limits(
            p["max_entries"], bool(p["per_event"]), bool(p["per_day"]), bool(p["one_day"])
        )
        for p in tx.all(
            "SELECT id, max_entries, per_event, per_day, one_day FROM pass_products"
            " WHERE venue_id = ?",
            (venue,),
        )
    }


def _conflicts_out(result: Reconciled, nodes: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{**_scan_out(c.scan, nodes), "reason": str(c.reason)} for c in result.conflicts]


def _scan_out(scan: ScanItem, nodes: Mapping[str, str]) -> dict[str, Any]:
    return {
        "scan_id": scan.scan_id,
        "node": nodes.get(scan.scan_id, ""),
        "gate": scan.gate,
        "date": scan.date,
        "direction": str(scan.direction),
        "reason_at_node": str(scan.reason),
        "scanned_at": scan.scanned_at,
        "offline": scan.offline,
    }
