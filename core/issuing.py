"""Issuing ticket and pass rows with their signed codes; reading them back for answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from core import feed
from core._util import iso
from core.errors import NotFound
from core.keys import Signer, signer
from core.models import TicketOut
from sync.codes import Kind, code_digest
from sync.snapshot import Channel, Status

if TYPE_CHECKING:
    from core.store import Tx

CHANNELS: Final = {
    "online": Channel.ONLINE,
    "box_office": Channel.BOX_OFFICE,
    "reseller": Channel.RESELLER,
}
CHANNEL_NAMES: Final = {int(v): k for k, v in CHANNELS.items()}
STATUS_NAMES: Final = {
    int(Status.VALID): "valid",
    int(Status.CANCELLED): "cancelled",
    int(Status.UNPAID): "unpaid",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One ticket or pass to issue."""

    kind: Kind
    venue: int
    event: int
    """Event id (ticket) or pass product id (pass)."""
    date: int
    zone: int
    rate: int | None
    price: Decimal
    dates: tuple[int, ...] = ()


class Issuer:
    """Issues rows within one write transaction, signing with the active key."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._signer: Signer | None = None
        self._next = tx.next_id("tickets")

    def issue(
        self,
        line: Line,
        *,
        status: Status,
        channel: Channel,
        sold: bool,
        order_id: int | None,
        order_number: str,
        holder: str,
        plain_code: str | None = None,
        import_id: int | None = None,
    ) -> int:
        ident = self._next
        self._next += 1
        if plain_code is None:
            if self._signer is None:
                self._signer = signer(self._tx)
            key_id = self._signer.key_id
            code = self._signer.code(line.kind, ident, line.event, line.date, line.zone)
        else:
            key_id = 0
            code = plain_code
        self._tx.exec(
            "INSERT INTO tickets (id, kind, status, venue_id, event_id, date_id, zone_id,"
            " rate_id, price, code, digest, key_id, channel, sold, order_id, order_number,"
            " holder, media, dates, import_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?)",
            (
                ident,
                int(line.kind),
                int(status),
                line.venue,
                line.event,
                line.date,
                line.zone,
                line.rate,
                str(line.price),
                code,
                code_digest(code),
                key_id,
                int(channel),
                int(sold),
                order_id,
                order_number,
                holder,
                ",".join(map(str, line.dates)),
                import_id,
                time.time(),
            ),
        )
        feed.record_changed(self._tx, line.venue, ident)
        return ident


def ticket_row(tx: Tx, ticket_id: int) -> Any:
    row = tx.one("SELECT * FROM tickets WHERE id = ?", (ticket_id,))
    if row is None:
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    return row


def ticket_out(row: Any) -> TicketOut:
    return TicketOut(
        id=row["id"],
        kind="pass" if row["kind"] == Kind.PASS else "ticket",
        status=STATUS_NAMES[row["status"]],  # type: ignore[arg-type]
        code=row["code"],
        event=row["event_id"],
        date=row["date_id"],
        zone=row["zone_id"],
        rate=row["rate_id"],
        price=Decimal(row["price"]),
        channel=CHANNEL_NAMES[row["channel"]],  # type: ignore[arg-type]
        sold=bool(row["sold"]),
        order=row["order_number"],
        holder=row["holder"],
        media=row["media"].split(",") if row["media"] else [],
        dates=[int(d) for d in row["dates"].split(",")] if row["dates"] else [],
        key_id=row["key_id"],
        cancelled_at=iso(row["cancelled_at"]),
        cancel_reason=row["cancel_reason"],
        refund_method=row["refund_method"],
    )


def set_status(tx: Tx, row: Any, status: Status) -> None:
    tx.exec("UPDATE tickets SET status = ? WHERE id = ?", (int(status), row["id"]))
    feed.record_changed(tx, int(row["venue_id"]), int(row["id"]))
