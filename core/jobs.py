"""Invoice payment deadlines: reminders, then automatic cancellation.

With ``d`` days before the first reminder and ``n`` reminders (kept on the order when it
is placed), an unpaid invoice order gets reminder k after k·d days (k = 1…n) and is
cancelled after (n+1)·d days; its seats go back on sale. The customer is told each time
through the outbox. The job is idempotent: it only sends what is due and not sent yet,
and a job that ran late sends the latest reminder once rather than every missed one.
``now`` is always passed in.

The same periodic run moves the RFID cards of renewed passes whose old season is over
(``core.renewals.move_renewed_cards``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from core._util import iso
from core.orders import DAY_S, InvoicePolicy, cancel_tickets
from core.renewals import move_renewed_cards
from sync.snapshot import Status

if TYPE_CHECKING:
    from core.store import Tx

DEADLINE_REASON: Final = "payment_deadline"


@dataclass(frozen=True, slots=True)
class JobReport:
    reminders: int
    cancelled: int
    cards_moved: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "reminders": self.reminders,
            "cancelled": self.cancelled,
            "cards_moved": self.cards_moved,
        }


def run_deadlines(tx: Tx, now: float) -> JobReport:
    """Send due reminders and cancel overdue invoice orders, as of *now*."""
    reminders = cancelled = 0
    for order in tx.all(
        "SELECT * FROM orders WHERE status = 'pending' AND payment = 'invoice' ORDER BY id"
    ):
        policy = InvoicePolicy(order["reminder_days"], order["reminders"])
        period = policy.reminder_days * DAY_S
        age = now - float(order["created_at"])
        if now >= policy.deadline(order["created_at"]):
            active = tx.all(
                "SELECT * FROM tickets WHERE order_id = ? AND status != ?",
                (order["id"], int(Status.CANCELLED)),
            )
            cancel_tickets(tx, order, active, DEADLINE_REASON, "none", now)
            _notify(
                tx,
                order,
                "cancelled",
                f"Order {order['number']} cancelled",
                f"Your order {order['number']} was not paid in time and has been cancelled.",
                now,
            )
            cancelled += 1
            continue
        due = min(policy.reminders, math.floor(age / period)) if period > 0 else 0
        if due > order["reminders_sent"]:
            tx.exec("UPDATE orders SET reminders_sent = ? WHERE id = ?", (due, order["id"]))
            deadline = iso(policy.deadline(order["created_at"]))
            _notify(
                tx,
                order,
                "reminder",
                f"Payment reminder {due} for order {order['number']}",
                f"Your order {order['number']} ({order['total']} {order['currency']}) is"
                f" awaiting payment. Unless paid by {deadline}, it will be cancelled.",
                now,
            )
            reminders += 1
    # After the cancellations above: a renewal cancelled for non-payment keeps no cards.
    return JobReport(reminders, cancelled, move_renewed_cards(tx, now))


def outbox(tx: Tx, order_number: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT n.*, o.number FROM outbox n JOIN orders o ON o.id = n.order_id"
        + (" WHERE o.number = ?" if order_number else "")
        + " ORDER BY n.id"
    )
    params = (order_number.upper(),) if order_number else ()
    return [
        {
            "id": r["id"],
            "order": r["number"],
            "kind": r["kind"],
            "email": r["email"],
            "subject": r["subject"],
            "body": r["body"],
            "created_at": iso(r["created_at"]),
            "sent_at": iso(r["sent_at"]),
        }
        for r in tx.all(sql, params)
    ]


def _notify(tx: Tx, order: Any, kind: str, subject: str, body: str, now: float) -> None:
    tx.exec(
        "INSERT INTO outbox (id, order_id, kind, email, subject, body, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tx.next_id("outbox"), order["id"], kind, order["customer_email"], subject, body, now),
    )
