"""Orders: placement, payment, cancellation (whole or per ticket).

Placement runs in one write transaction: every line takes its seats (or pass quota)
with a guarded update, so a zone is never oversold, and any failure undoes the whole
order. Payment methods:

- ``card`` and ``cash``: paid at once;
- ``free``: invitations, paid at once at a total of zero;
- ``invoice``: ``pending`` until ``pay``; its tickets are ``unpaid`` at the gate. It
  gets reminders and is cancelled automatically when still unpaid (``core.jobs``).

Cancellation frees the seats at once (they go back on sale) and records the refund
method, reason and amount. A pending invoice order can only be cancelled whole: there
is nothing to refund yet, and a partial invoice would need a new one.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from core import catalog, feed
from core._util import iso
from core.errors import BadRequest, Conflict, NotFound
from core.issuing import CHANNELS, Issuer, Line, set_status, ticket_out
from core.models import CustomerIn, OrderOut, Payment, SaleChannel
from core.passes import pass_line
from sync.codes import Kind
from sync.snapshot import Status

if TYPE_CHECKING:
    from core.models import CancelIn, OrderIn
    from core.store import Tx

ORDER_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: numbers are read aloud at the box office."""
ORDER_NUMBER_CHARS: Final = 7
DAY_S: Final = 86_400.0
MAX_ORDER_TICKETS: Final = 1000
"""Each ticket is signed inside the order's transaction; bigger batches are stock."""


@dataclass(frozen=True, slots=True)
class InvoicePolicy:
    """Reminders after d, 2d, … n·d days; cancellation after (n+1)·d days."""

    reminder_days: int = 10
    reminders: int = 2

    def deadline(self, created_at: float) -> float:
        return created_at + (self.reminders + 1) * self.reminder_days * DAY_S


def place_order(tx: Tx, body: OrderIn, policy: InvoicePolicy) -> OrderOut:
    if body.channel == "online" and body.payment == "cash":
        raise BadRequest("bad_payment", "online orders cannot be paid cash")
    lines: list[Line] = []
    currencies: set[str] = set()
    for item in body.items:
        if item.pass_ is not None:
            if item.date is not None or item.zone is not None or item.rate is not None:
                raise BadRequest("bad_item", "a pass line takes pass, quantity and choices only")
            found = pass_line(tx, item.pass_, item.choices, item.quantity)
            currencies.add(found.currency)
            lines.extend([found.line] * item.quantity)
            continue
        if item.date is None or item.zone is None or item.rate is None:
            raise BadRequest("bad_item", "a ticket line needs date, zone and rate (or pass)")
        if item.choices is not None:
            raise BadRequest("bad_item", "choices apply to pass lines only")
        row = catalog.sale_line(tx, item.date, item.zone, item.rate)
        catalog.take_seats(tx, item.date, item.zone, item.quantity)
        currencies.add(str(row["currency"]))
        line = Line(
            Kind.TICKET,
            int(row["venue_id"]),
            int(row["event_id"]),
            item.date,
            item.zone,
            item.rate,
            Decimal(row["price"]),
        )
        lines.extend([line] * item.quantity)
    if len(lines) > MAX_ORDER_TICKETS:
        raise BadRequest("too_many_tickets", f"at most {MAX_ORDER_TICKETS} tickets per order")
    if len(currencies) != 1:
        raise BadRequest("mixed_currencies", "all items of an order must share one currency")
    free = body.payment == "free"
    if free:
        lines = [
            Line(ln.kind, ln.venue, ln.event, ln.date, ln.zone, ln.rate, Decimal("0.00"), ln.dates)
            for ln in lines
        ]
    total = sum((ln.price for ln in lines), Decimal("0.00"))
    pending = body.payment == "invoice"
    order_id, number = new_order(
        tx, body.customer, body.payment, body.channel, total, currencies.pop(), policy
    )
    issuer = Issuer(tx)
    for ln in lines:
        issuer.issue(
            ln,
            status=Status.UNPAID if pending else Status.VALID,
            channel=CHANNELS[body.channel],
            sold=True,
            order_id=order_id,
            order_number=number,
            holder=body.customer.name,
        )
    return get_order(tx, number)


def new_order(
    tx: Tx,
    customer: CustomerIn,
    payment: Payment,
    channel: SaleChannel,
    total: Decimal,
    currency: str,
    policy: InvoicePolicy,
) -> tuple[int, str]:
    """Insert an order row (``pending`` for invoices, else ``paid``); return id and number."""
    pending = payment == "invoice"
    now = time.time()
    number = _new_number(tx)
    order_id = tx.next_id("orders")
    tx.exec(
        "INSERT INTO orders (id, number, status, payment, channel, customer_name,"
        " customer_email, total, currency, created_at, paid_at, reminder_days, reminders)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            order_id,
            number,
            "pending" if pending else "paid",
            payment,
            channel,
            customer.name,
            customer.email,
            str(total),
            currency,
            now,
            None if pending else now,
            policy.reminder_days,
            policy.reminders,
        ),
    )
    return order_id, number


def get_order(tx: Tx, number: str) -> OrderOut:
    row = order_row(tx, number)
    tickets = [
        ticket_out(t)
        for t in tx.all("SELECT * FROM tickets WHERE order_id = ? ORDER BY id", (row["id"],))
    ]
    refunded = tx.all("SELECT amount FROM cancellations WHERE order_id = ?", (row["id"],))
    due = None
    if row["status"] == "pending":
        policy = InvoicePolicy(row["reminder_days"], row["reminders"])
        due = iso(policy.deadline(row["created_at"]))
    return OrderOut(
        number=row["number"],
        status=row["status"],
        payment=row["payment"],
        channel=row["channel"],
        customer=CustomerIn(row["customer_name"], row["customer_email"]),
        total=Decimal(row["total"]),
        currency=row["currency"],
        created_at=iso(row["created_at"]) or "",
        paid_at=iso(row["paid_at"]),
        cancelled_at=iso(row["cancelled_at"]),
        reminders_sent=row["reminders_sent"],
        due_at=due,
        tickets=tickets,
        refunded=sum((Decimal(r["amount"]) for r in refunded), Decimal("0.00")),
    )


def pay(tx: Tx, number: str) -> OrderOut:
    """Validate an invoice order's payment: its tickets become valid at the gate."""
    row = order_row(tx, number)
    if row["status"] == "cancelled":
        raise Conflict("order_cancelled", f"order {number} is cancelled")
    if row["status"] == "paid":
        raise Conflict("already_paid", f"order {number} is already paid")
    tx.exec("UPDATE orders SET status = 'paid', paid_at = ? WHERE id = ?", (time.time(), row["id"]))
    for t in tx.all(
        "SELECT id, venue_id FROM tickets WHERE order_id = ? AND status = ?",
        (row["id"], int(Status.UNPAID)),
    ):
        set_status(tx, t, Status.VALID)
    return get_order(tx, number)


def cancel(tx: Tx, number: str, body: CancelIn, now: float | None = None) -> OrderOut:
    """Cancel a whole order, or some of its tickets."""
    row = order_row(tx, number)
    if row["status"] == "cancelled":
        raise Conflict("order_cancelled", f"order {number} is already cancelled")
    active = tx.all(
        "SELECT * FROM tickets WHERE order_id = ? AND status != ? ORDER BY id",
        (row["id"], int(Status.CANCELLED)),
    )
    targets = active
    if body.tickets is not None:
        wanted = set(body.tickets)
        by_id = {int(t["id"]): t for t in active}
        missing = wanted - by_id.keys()
        if missing:
            raise NotFound(
                "ticket_not_in_order",
                f"tickets {sorted(missing)} are not active tickets of order {number}",
            )
        if row["status"] == "pending" and wanted != by_id.keys():
            raise Conflict(
                "partial_cancel_unpaid",
                "an invoice order awaiting payment can only be cancelled whole",
            )
        targets = [by_id[i] for i in sorted(wanted)]
    refund = body.refund if row["status"] == "paid" else "none"
    cancel_tickets(tx, row, targets, body.reason, refund, time.time() if now is None else now)
    return get_order(tx, number)


def cancel_tickets(
    tx: Tx, order: Any, targets: list[Any], reason: str, refund: str, now: float
) -> Decimal:
    """Cancel *targets* of *order*, free their seats, record the refund; return its amount."""
    amount = Decimal("0.00")
    for t in targets:
        tx.exec(
            "UPDATE tickets SET status = ?, cancelled_at = ?, cancel_reason = ?,"
            " refund_method = ? WHERE id = ?",
            (int(Status.CANCELLED), now, reason, refund, t["id"]),
        )
        release(tx, t)
        if refund != "none":
            amount += Decimal(t["price"])
        feed.record_changed(tx, int(t["venue_id"]), int(t["id"]))
    if order is None:
        return amount
    tx.exec(
        "INSERT INTO cancellations (id, order_id, tickets, amount, refund_method, reason, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            tx.next_id("cancellations"),
            order["id"],
            ",".join(str(t["id"]) for t in targets),
            str(amount),
            refund,
            reason,
            now,
        ),
    )
    left = tx.scalar(
        "SELECT COUNT(*) FROM tickets WHERE order_id = ? AND status != ?",
        (order["id"], int(Status.CANCELLED)),
    )
    if not left:
        tx.exec(
            "UPDATE orders SET status = 'cancelled', cancelled_at = ?, cancel_reason = ?,"
            " refund_method = ? WHERE id = ?",
            (now, reason, refund, order["id"]),
        )
    return amount


def release(tx: Tx, ticket: Any) -> None:
    """Put a cancelled ticket's seat (or pass quota) back on sale."""
    if ticket["kind"] == Kind.PASS:
        tx.exec(
            "UPDATE pass_products SET sold = sold - 1 WHERE id = ? AND sold > 0",
            (ticket["event_id"],),
        )
    else:
        catalog.release_seats(tx, int(ticket["date_id"]), int(ticket["zone_id"]), 1)


def order_row(tx: Tx, number: str) -> Any:
    row = tx.one("SELECT * FROM orders WHERE number = ?", (number.upper(),))
    if row is None:
        raise NotFound("order_not_found", f"no order {number}")
    return row


def _new_number(tx: Tx) -> str:
    while True:
        number = "".join(secrets.choice(ORDER_ALPHABET) for _ in range(ORDER_NUMBER_CHARS))
        if tx.one("SELECT 1 FROM orders WHERE number = ?", (number,)) is None:
            return number
