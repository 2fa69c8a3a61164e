"""Scan ingestion from edge nodes, and each ticket's reconciled entries and conflicts.

Scans are stored once per (venue, ``scan_id``): a re-sent scan is acknowledged as a
``duplicate`` and changes nothing. A scan of a ticket id this venue does not know is
``refused`` (final). Scans of codes that matched nothing (ticket 0) are kept for audit.
Entries and conflicts are computed on read by ``sync.reconcile``, the same replay the
gates' rules define, so they always reflect every scan uploaded so far.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from core.issuing import ticket_out, ticket_row
from core.models import MAX_ID
from sync.codes import Kind
from sync.reconcile import reconcile
from sync.rules import NO_LIMITS, Direction, Limits, Mode, Reason
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
        acks.append(Ack(item.scan_id, "stored" if stored == 1 else "duplicate"))
    return UploadResult(acks)


def ticket_detail(tx: Tx, ticket_id: int) -> dict[str, Any]:
    """A ticket with its reconciled ``entries`` and ``conflicts`` across nodes."""
    row = ticket_row(tx, ticket_id)
    rows = tx.all("SELECT * FROM scans WHERE ticket_id = ?", (ticket_id,))
    nodes = {str(r["scan_id"]): str(r["node"]) for r in rows}
    scans = [_scan_item(r) for r in rows]
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
        product = tx.one("SELECT * FROM pass_products WHERE id = ?", (row["event_id"],))
        if product is not None:
            limits = Limits(
                product["max_entries"],
                bool(product["per_event"]),
                bool(product["per_day"]),
                bool(product["one_day"]),
            )
    result = reconcile(scans, dates, limits)
    out: dict[str, Any] = {
        f: getattr(ticket_out(row), f) for f in ticket_out(row).__struct_fields__
    }
    out["entries"] = [_scan_out(s, nodes) for s in result.entries]
    out["conflicts"] = [
        {**_scan_out(c.scan, nodes), "reason": str(c.reason)} for c in result.conflicts
    ]
    out["entry_count"] = result.entry_count
    out["scans"] = len(scans)
    return out


def _scan_item(r: Any) -> ScanItem:
    return ScanItem(
        scan_id=r["scan_id"],
        ticket=r["ticket_id"],
        result=r["result"],
        reason=Reason(r["reason"]),
        direction=Direction(r["direction"]),
        gate=r["gate"],
        mode=Mode(r["mode"]),
        date=r["date_id"],
        scanned_at=r["scanned_at"],
        logged_at=r["logged_at"],
        offline=bool(r["offline"]),
    )


def _scan_out(scan: ScanItem, nodes: dict[str, str]) -> dict[str, Any]:
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
