"""Pass renewal: a holder's pass is renewed into a new product (next season).

The renewal is a new order for the same customer, and the RFID cards attached to the
old pass move to the new one, so the holder keeps using the same card. The old pass
stays valid for what is left of its own season.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import Conflict
from core.issuing import ticket_row
from core.models import CustomerIn, ItemIn, OrderIn
from core.orders import get_order, place_order
from core.passes import store_media
from sync.codes import Kind
from sync.snapshot import Status

if TYPE_CHECKING:
    from core.models import OrderOut, RenewIn
    from core.orders import InvoicePolicy
    from core.store import Tx


def renew(tx: Tx, pass_id: int, body: RenewIn, policy: InvoicePolicy) -> OrderOut:
    old = ticket_row(tx, pass_id)
    if old["kind"] != Kind.PASS:
        raise Conflict("not_a_pass", f"ticket {pass_id} is not a pass")
    if old["status"] == Status.CANCELLED:
        raise Conflict("cancelled", f"pass {pass_id} is cancelled")
    email = tx.scalar("SELECT customer_email FROM orders WHERE id = ?", (old["order_id"],))
    order = place_order(
        tx,
        OrderIn(
            customer=CustomerIn(old["holder"] or "Pass holder", email or ""),
            payment=body.payment,
            channel=body.channel,
            items=[ItemIn(quantity=1, pass_=body.product, choices=body.choices)],
        ),
        policy,
    )
    new = ticket_row(tx, order.tickets[0].id)
    if tx.exec("UPDATE media SET ticket_id = ? WHERE ticket_id = ?", (new["id"], pass_id)):
        store_media(tx, old)
        store_media(tx, new)
    return get_order(tx, order.number)
