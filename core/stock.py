"""Printed box-office stock, its quick cancellation, and reseller barcode imports.

Printed stock is issued ahead of sale on the box-office or reseller channel with
``sold = False``: its seats are taken, no customer holds it yet. Selling it attaches an
order. Quick cancellation (by code, from the back office or a gate in quick-cancel
mode) cancels unsold stock and frees its seat at once; a sold ticket (an online
customer's, or stock already sold) and a ticket already used are never quick-cancelled.

Reseller imports turn a CSV of third-party barcodes into tickets with plain codes for
one date, zone and rate; the gates know them by their digest.
"""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from core import catalog, feed
from core.errors import BadRequest, Conflict
from core.issuing import CHANNELS, Issuer, Line, ticket_out
from core.models import SaleChannel, TicketOut
from core.orders import get_order, new_order, release
from sync.codes import MAX_CODE_CHARS, Kind, code_digest, is_signed_text, normalize
from sync.snapshot import Status
from sync.wire import QuickCancelAnswer

if TYPE_CHECKING:
    from core.models import OrderOut, ResellerImportIn, StockIn, StockSellIn
    from core.orders import InvoicePolicy
    from core.store import Tx

MAX_IMPORT_ROWS: Final = 100_000
_HEADER_WORDS: Final = frozenset({"barcode", "code", "ticket", "ean"})
_DELIMITERS: Final = ";\t,"
_NOT_IN_BARCODES: Final = " ,;\t"
SAMPLE_CHARS: Final = 16 * 1024
SAMPLE_LINES: Final = 50


def print_stock(tx: Tx, body: StockIn) -> list[TicketOut]:
    row = catalog.sale_line(tx, body.date, body.zone, body.rate)
    catalog.take_seats(tx, body.date, body.zone, body.quantity)
    line = _line(row, body.date, body.zone, body.rate)
    issuer = Issuer(tx)
    ids = [
        issuer.issue(
            line,
            status=Status.VALID,
            channel=CHANNELS[body.channel],
            sold=False,
            order_id=None,
            order_number="",
            holder="",
        )
        for _ in range(body.quantity)
    ]
    return _tickets(tx, ids)


def sell_stock(tx: Tx, body: StockSellIn, policy: InvoicePolicy) -> OrderOut:
    """Sell printed stock: one order holding the given unsold tickets."""
    rows = []
    for ticket_id in sorted(set(body.tickets)):
        row = tx.one("SELECT * FROM tickets WHERE id = ?", (ticket_id,))
        if row is None or row["sold"] or row["status"] != Status.VALID:
            raise Conflict("not_stock", f"ticket {ticket_id} is not unsold printed stock")
        rows.append(row)
    channels = {int(r["channel"]) for r in rows}
    if len(channels) != 1:
        raise BadRequest("mixed_channels", "sell stock of one channel per order")
    currencies = {
        str(tx.scalar("SELECT currency FROM events WHERE id = ?", (event,)))
        for event in {int(r["event_id"]) for r in rows}
    }
    if len(currencies) != 1:
        raise BadRequest("mixed_currencies", "all tickets of an order must share one currency")
    currency = currencies.pop()
    free = body.payment == "free"
    total = sum((Decimal(r["price"]) for r in rows), Decimal("0.00")) if not free else Decimal(0)
    channel: SaleChannel = "box_office" if channels == {int(CHANNELS["box_office"])} else "reseller"
    order_id, number = new_order(
        tx, body.customer, body.payment, channel, total, str(currency), policy
    )
    status = Status.UNPAID if body.payment == "invoice" else Status.VALID
    for r in rows:
        tx.exec(
            "UPDATE tickets SET sold = 1, status = ?, order_id = ?, order_number = ?,"
            " holder = ?, price = ? WHERE id = ?",
            (
                int(status),
                order_id,
                number,
                body.customer.name,
                "0.00" if free else r["price"],
                r["id"],
            ),
        )
        feed.record_changed(tx, int(r["venue_id"]), int(r["id"]))
    return get_order(tx, number)


def quick_cancel(
    tx: Tx, code: str, *, venue: int | None = None, scan_id: str = "", now: float | None = None
) -> QuickCancelAnswer:
    """Cancel unsold printed stock by its code; idempotent by *scan_id* when given."""
    if scan_id and venue is not None:
        done = tx.one(
            "SELECT ticket_id, result, reason FROM quick_cancels"
            " WHERE venue_id = ? AND scan_id = ?",
            (venue, scan_id),
        )
        if done is not None:
            return QuickCancelAnswer(scan_id, done["result"], done["reason"], done["ticket_id"])
    at = time.time() if now is None else now
    answer = _quick_cancel(tx, normalize(code), venue, scan_id, at)
    if scan_id and venue is not None:
        tx.exec(
            "INSERT INTO quick_cancels (venue_id, scan_id, ticket_id, result, reason, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (venue, scan_id, answer.ticket, answer.result, answer.reason, at),
        )
    return answer


def import_reseller(tx: Tx, body: ResellerImportIn) -> dict[str, Any]:
    """Import third-party barcodes as tickets with plain codes; all or nothing."""
    entries = _parse_csv(body.csv)
    for code, _holder in entries:
        if tx.one("SELECT 1 FROM tickets WHERE digest = ?", (code_digest(code),)):
            raise Conflict("duplicate_code", f"barcode {code!r} is already known")
    row = catalog.sale_line(tx, body.date, body.zone, body.rate)
    catalog.take_seats(tx, body.date, body.zone, len(entries))
    import_id = tx.next_id("imports")
    tx.exec(
        "INSERT INTO imports (id, reseller, date_id, zone_id, rate_id, count, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (import_id, body.reseller, body.date, body.zone, body.rate, len(entries), time.time()),
    )
    line = _line(row, body.date, body.zone, body.rate)
    issuer = Issuer(tx)
    ids = [
        issuer.issue(
            line,
            status=Status.VALID,
            channel=CHANNELS["reseller"],
            sold=True,
            order_id=None,
            order_number="",
            holder=holder,
            plain_code=code,
            import_id=import_id,
        )
        for code, holder in entries
    ]
    return {
        "import": import_id,
        "reseller": body.reseller,
        "date": body.date,
        "zone": body.zone,
        "rate": body.rate,
        "count": len(ids),
        "tickets": ids,
    }


def _quick_cancel(
    tx: Tx, code: str, venue: int | None, scan_id: str, at: float
) -> QuickCancelAnswer:
    row = tx.one("SELECT * FROM tickets WHERE digest = ?", (code_digest(code),))
    if row is None or (venue is not None and row["venue_id"] != venue):
        return QuickCancelAnswer(scan_id, "rejected", "unknown")
    ident = int(row["id"])
    if row["status"] == Status.CANCELLED:
        return QuickCancelAnswer(scan_id, "rejected", "cancelled", ident)
    if row["sold"] or row["kind"] != Kind.TICKET:
        return QuickCancelAnswer(scan_id, "rejected", "sold", ident)
    if tx.one("SELECT 1 FROM scans WHERE ticket_id = ? AND result = 'accepted' LIMIT 1", (ident,)):
        return QuickCancelAnswer(scan_id, "rejected", "already_used", ident)
    tx.exec(
        "UPDATE tickets SET status = ?, cancelled_at = ?, cancel_reason = 'quick_cancel',"
        " refund_method = 'none' WHERE id = ?",
        (int(Status.CANCELLED), at, ident),
    )
    release(tx, row)
    feed.record_changed(tx, int(row["venue_id"]), ident)
    return QuickCancelAnswer(scan_id, "accepted", "ok", ident)


def _delimiter(text: str) -> str:
    """The CSV's delimiter: a semicolon (what spreadsheets export where the comma is the
    decimal mark: French, German, Italian), a tab, or a comma. The first that splits
    every sampled line in two or more fields wins, in that order: a semicolon file often
    holds commas too (``12,50``, ``Meier, Ana``), a comma file rarely a semicolon on
    every line. Else the first line decides; a file of one column reads the same with a
    comma."""
    lines = [line for line in text[:SAMPLE_CHARS].splitlines()[:SAMPLE_LINES] if line.strip()]
    if len(text) > SAMPLE_CHARS and len(lines) > 1:
        lines.pop()  # possibly cut short
    for sample in (lines, lines[:1]):
        for delimiter in _DELIMITERS:
            if sample and _splits(sample, delimiter):
                return delimiter
    return ","


def _splits(lines: list[str], delimiter: str) -> bool:
    try:
        return all(len(cells) >= 2 for cells in csv.reader(lines, delimiter=delimiter))
    except csv.Error:
        return False


def _parse_csv(text: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    # A byte order mark (Excel's "CSV UTF-8") is not part of the first cell.
    text = text.removeprefix("\ufeff")
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=_delimiter(text)))
    except csv.Error as exc:
        raise BadRequest("bad_csv", f"not a CSV file: {exc}") from exc
    for number, cells in enumerate(rows, start=1):
        if not cells or not cells[0].strip():
            continue
        code = normalize(cells[0])
        if number == 1 and code.lower() in _HEADER_WORDS:
            continue
        holder = cells[1].strip()[:200] if len(cells) > 1 else ""
        if (
            len(code) > MAX_CODE_CHARS
            or not code.isprintable()
            or any(c in code for c in _NOT_IN_BARCODES)
        ):
            # A delimiter inside a code means the file was split wrongly: refuse it
            # rather than store a barcode no scanner will ever read.
            raise BadRequest("bad_code", f"line {number}: not a usable barcode ({code!r})")
        if is_signed_text(code):
            raise BadRequest("bad_code", f"line {number}: looks like one of our signed codes")
        if code in seen:
            raise BadRequest("duplicate_code", f"line {number}: barcode repeated in the file")
        seen.add(code)
        entries.append((code, holder))
        if len(entries) > MAX_IMPORT_ROWS:
            raise BadRequest("too_many_rows", f"at most {MAX_IMPORT_ROWS} barcodes per import")
    if not entries:
        raise BadRequest("empty_import", "the CSV holds no barcode")
    return entries


def _line(row: Any, date: int, zone: int, rate: int) -> Line:
    return Line(
        Kind.TICKET,
        int(row["venue_id"]),
        int(row["event_id"]),
        date,
        zone,
        rate,
        Decimal(row["price"]),
    )


def _tickets(tx: Tx, ids: list[int]) -> list[TicketOut]:
    return (
        [
            ticket_out(r)
            for r in tx.all(
                "SELECT * FROM tickets WHERE id BETWEEN ? AND ? ORDER BY id",
                (ids[0], ids[-1]),
            )
        ]
        if ids
        else []
    )
